"""The Dagster side: recipes become assets, checks, schedules and automation. The library never imports this."""
