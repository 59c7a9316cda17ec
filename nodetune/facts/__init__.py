"""The typed facts and what is computed from them: contract paths, derived and health facts,
topology."""
