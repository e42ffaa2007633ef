from tagwatch.cli import app

app()
