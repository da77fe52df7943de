"""One module per `worldtrace` subcommand, each exposing `command`."""
