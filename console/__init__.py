"""The operator console: a web page that watches and steers the fleet, live (docs/console.md)."""
