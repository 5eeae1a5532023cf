"""Adaptive Card renderers: domain objects in, plain JSON-able dicts (Adaptive Cards 1.5) out. No I/O.

verbs    the Action.Execute verbs and the only data a card carries
text     escaping/defanging of untrusted text (safe_text, safe_line)
builder  the one module that uses adaptive-cards-py (and works around its quirks)
layout   header, state badge, UTC times and wording shared by the cards
intake   the request form; status: a request in any state for any viewer; approval: its approval views
receipt  the channel receipt and on-call alerts; lists: help, request lists, notices
"""
