from agenthub.cli.main import app

app()
