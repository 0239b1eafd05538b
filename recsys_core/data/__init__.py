"""Loading and validating data: catalog folders, named dataset adapters, safe image loading, offline splits."""
