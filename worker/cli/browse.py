"""`healthbeat browse`: the store in a web browser, read-only (Datasette, the `browse` extra)."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from worker.cli.common import DbOption, VerboseOption, app, cli_settings, setup_logging


@app.command()
def browse(port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8001,
           host: Annotated[str, typer.Option(help="Address to listen on; loopback only unless --allow-remote.")
                           ] = "127.0.0.1",
           allow_remote: Annotated[bool, typer.Option(
               "--allow-remote", help="Listen on an address other machines reach: the pages show customer data "
                                      "with no login, so only behind a proxy that authenticates.")] = False,
           open_browser: Annotated[bool, typer.Option("--open", help="Open the index in the default browser.")
                                   ] = False,
           db: DbOption = None, verbose: VerboseOption = False) -> None:
    """Browse the database read-only in Datasette: tables described, facets, canned queries; safe beside the
    worker. Needs the browse extra: pip install 'healthbeat\\[browse]'."""
    from worker.ops.browse import check_datasette, check_host, serve

    check_datasette()
    check_host(host, allow_remote=allow_remote)
    settings = cli_settings(db)
    setup_logging(verbose)

    def ready(url: str) -> None:
        typer.echo(f"Browsing {settings.db} read-only at {url} (Ctrl-C stops)")
        if open_browser:
            webbrowser.open(url)

    serve(settings.db, host, port, allow_remote=allow_remote, verbose=verbose, ready=ready)
