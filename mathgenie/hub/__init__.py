"""A local Hugging Face Hub: ``serve_in_thread(root)`` for tests and scripts, ``mathgenie hub serve`` on the command
line (see `mathgenie.hub.server`)."""
