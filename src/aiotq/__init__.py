"""aiotq: an asyncio-native distributed task framework."""
