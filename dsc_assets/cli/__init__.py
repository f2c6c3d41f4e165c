"""`dsc`: one module per command; main.py parses the command line."""
