"""The ``gtc`` command line: thin typer commands over the library."""
