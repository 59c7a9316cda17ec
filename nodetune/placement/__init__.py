"""Where each GPU's work runs: cores, memory node and NICs, for manifests and `bind`."""
