"""The node: one event loop's share of the layer, split into parts with one job each."""
