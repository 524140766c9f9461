"""The computations of synthfactory, free of Dagster so they run and test on their own."""
