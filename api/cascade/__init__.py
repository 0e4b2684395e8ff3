"""GB/T 28181 cascade: we are the lower platform (下级平台) of one or more upper platforms."""
