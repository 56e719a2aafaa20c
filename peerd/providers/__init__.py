"""Built-in resource providers: files, storage and relay."""
