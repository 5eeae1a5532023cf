// Render docs/screenshots/{intake,approval,receipt}.json to PNG with the official Adaptive Cards renderer
// (npm `adaptivecards`, markdown by `markdown-it`) in headless Debian Chromium, with a host config close to
// Teams' light theme.
//
//   .venv/bin/python docs/screenshots/make_cards.py    # writes the JSON from the product's card functions
//   (cd docs/screenshots && npm ci && node render.mjs)  # writes intake.png, approval.png, receipt.png
//
// CHROMIUM overrides the browser path (default /usr/bin/chromium). Nothing is fetched from the network: https
// requests (web fonts) are aborted and the page uses the fonts installed locally.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");
const rendererJs = require.resolve("adaptivecards/dist/adaptivecards.min.js");
// Teams renders TextBlock markdown; the renderer does too when window.markdownit exists (as in the Designer).
const markdownJs = require.resolve("markdown-it/browser");

const CARDS = [
  { name: "intake", caption: "Sam's 1:1 chat: the intake form, prefilled from his message" },
  { name: "approval", caption: "Dana's 1:1 chat: the approval card" },
  { name: "receipt", caption: "Approvals channel: the grant receipt" },
];

// Teams (light) look: Segoe UI where installed, Teams purple accent, 14px body text, compact spacing.
const hostConfig = {
  fontFamily: "'Segoe UI', 'Segoe UI Web (West European)', -apple-system, 'Liberation Sans', 'DejaVu Sans', sans-serif",
  supportsInteractivity: true,
  spacing: { small: 4, default: 8, medium: 16, large: 20, extraLarge: 24, padding: 16 },
  separator: { lineThickness: 1, lineColor: "#E0E0E0" },
  fontSizes: { small: 12, default: 14, medium: 16, large: 18, extraLarge: 24 },
  fontWeights: { lighter: 300, default: 400, bolder: 600 },
  lineHeights: { small: 16, default: 20, medium: 22, large: 24, extraLarge: 32 },
  imageSizes: { small: 32, medium: 52, large: 100 },
  containerStyles: {
    default: {
      backgroundColor: "#FFFFFF",
      foregroundColors: {
        default: { default: "#242424", subtle: "#616161" },
        dark: { default: "#242424", subtle: "#616161" },
        light: { default: "#FFFFFF", subtle: "#F5F5F5" },
        accent: { default: "#5B5FC7", subtle: "#7F85F5" },
        good: { default: "#237B4B", subtle: "#2D8A57" },
        warning: { default: "#835C00", subtle: "#9C6D00" },
        attention: { default: "#C4314B", subtle: "#D13438" },
      },
    },
    emphasis: {
      backgroundColor: "#F5F5F5",
      foregroundColors: {
        default: { default: "#242424", subtle: "#616161" },
        accent: { default: "#5B5FC7", subtle: "#7F85F5" },
        good: { default: "#237B4B", subtle: "#2D8A57" },
        warning: { default: "#835C00", subtle: "#9C6D00" },
        attention: { default: "#C4314B", subtle: "#D13438" },
      },
    },
    accent: { backgroundColor: "#E8EBFA" },
    good: { backgroundColor: "#E7F2DA" },
    warning: { backgroundColor: "#FBF6D9" },
    attention: { backgroundColor: "#FCF4F6" },
  },
  actions: {
    maxActions: 6,
    spacing: "default",
    buttonSpacing: 8,
    showCard: { actionMode: "inline", inlineTopMargin: 12, style: "emphasis" },
    actionsOrientation: "horizontal",
    actionAlignment: "left",
  },
  adaptiveCard: { allowCustomStyle: true },
  factSet: {
    title: { weight: "bolder", size: "default", color: "default", wrap: false, maxWidth: 150 },
    value: { weight: "default", size: "default", color: "default", wrap: true },
    spacing: 12,
  },
  textBlock: { headingLevel: 2 },
  inputs: { label: { requiredInputs: { suffix: " *", suffixColor: "attention" }, optionalInputs: {} } },
};

const css = `
  body { margin: 0; background: #F5F5F5; font-family: ${hostConfig.fontFamily}; }
  .frame { display: inline-block; padding: 20px 24px 24px; }
  .meta { font-size: 12px; color: #616161; margin: 0 0 6px 2px; }
  .meta b { color: #242424; font-weight: 600; margin-right: 8px; }
  .bubble { width: 520px; background: #FFFFFF; border-radius: 6px; box-shadow: 0 1px 2px rgba(0,0,0,.14), 0 0 2px rgba(0,0,0,.12); overflow: hidden; }
  .ac-adaptiveCard { border-radius: 6px; }
  .ac-textBlock p { margin: 0; }
  .ac-pushButton { font-family: inherit; font-size: 14px; font-weight: 600; color: #242424; background: #FFFFFF;
    border: 1px solid #D1D1D1; border-radius: 4px; padding: 5px 12px; min-height: 32px; cursor: pointer; }
  .ac-pushButton.style-positive, .ac-pushButton.primary { background: #5B5FC7; border-color: #5B5FC7; color: #FFFFFF; }
  .ac-pushButton.style-destructive { color: #C4314B; border-color: #C4314B; }
  .ac-pushButton.expanded { background: #EBEBEB; }
  .ac-input, .ac-textInput, .ac-multichoiceInput { font-family: inherit; font-size: 14px; color: #242424;
    border: 1px solid #D1D1D1; border-bottom-color: #616161; border-radius: 4px; padding: 5px 8px; background: #FFFFFF; box-sizing: border-box; }
  textarea.ac-textInput { min-height: 64px; resize: none; }
  select.ac-multichoiceInput { height: 32px; }
`;

function page(caption) {
  return `<!doctype html><html><head><meta charset="utf-8"><style>${css}</style></head>
<body><div class="frame" id="frame"><p class="meta"><b>breakglass</b>${caption}</p><div class="bubble" id="card"></div></div></body></html>`;
}

const profile = mkdtempSync(join(tmpdir(), "breakglass-cards-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 640, height: 900 },
  deviceScaleFactor: 2,
});
let failed = 0;
try {
  for (const { name, caption } of CARDS) {
    const card = JSON.parse(readFileSync(join(here, `${name}.json`), "utf8"));
    const tab = await browser.newPage();
    await tab.route(/^https:\/\//, (route) => route.abort());
    await tab.setContent(page(caption));
    await tab.addScriptTag({ path: markdownJs });
    await tab.addScriptTag({ path: rendererJs });
    const problems = await tab.evaluate(({ card, hostConfig }) => {
      const ac = new AdaptiveCards.AdaptiveCard();
      ac.hostConfig = new AdaptiveCards.HostConfig(hostConfig);
      ac.hostConfig.factSet.title.wrap = false; // FactTextDefinition resets `wrap` after parsing it (3.0.6)
      const context = new AdaptiveCards.SerializationContext();
      ac.parse(card, context);
      const errors = [];
      for (let i = 0; i < context.eventCount; i++) errors.push(`parse: ${context.getEventAt(i).message}`);
      for (const event of ac.validateProperties().validationEvents) errors.push(`validate: ${event.message}`);
      const rendered = ac.render();
      if (!rendered) errors.push("render() returned nothing");
      else document.getElementById("card").appendChild(rendered);
      return errors;
    }, { card, hostConfig });
    await tab.evaluate(() => document.fonts.ready);
    const frame = tab.locator("#frame");
    const box = await frame.boundingBox();
    if (!box || box.height < 120) problems.push(`suspiciously small render (${JSON.stringify(box)})`);
    await frame.screenshot({ path: join(here, `${name}.png`) });
    await tab.close();
    if (problems.length) {
      failed += 1;
      console.error(`${name}: ${problems.join("; ")}`);
    } else {
      console.log(`wrote ${name}.png (${Math.round(box.width)}x${Math.round(box.height)} CSS px)`);
    }
  }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
