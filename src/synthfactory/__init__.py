"""synthfactory: Dagster assets that turn a list of classes into a measured synthetic training set."""

__version__ = "0.1.0"
