"""How arrays are placed on the devices: one mesh, a ``data`` axis, batch and parameter
shardings."""

PARAM_SHARDINGS = ("replicate", "fsdp")
