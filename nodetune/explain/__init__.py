"""`nodetune explain`: what one profile setting or health check does, why, its sources, its fix
and which profiles and check tiers use it, from the shipped profiles and check suites."""
