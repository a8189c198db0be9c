from rooftop.cli import entry

entry()
