"""The emergency-account watch: sign-ins of emergency access accounts become P1 incidents, alerts and a post-use
checklist (`watch`); the checklist's ticks (`checklist`); the account's directory changes since (`actions`)."""
