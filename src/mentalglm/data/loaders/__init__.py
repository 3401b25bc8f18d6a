"""One module per public dataset; importing this package registers them all."""
