"""chat: a self-hostable, authenticated, multi-room chat server."""
