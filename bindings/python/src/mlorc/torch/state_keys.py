"""The keys of mlorc's entries in optimizer state dicts."""
# A parameter's state: its bytes (a 1-D CPU uint8 tensor).
STATE_KEY = "mlorc_state"
# A D-adaptation rule's group state, in its param group.
GROUP_STATE_KEY = "mlorc_group_state"
# An FSDP2 parameter's state cut for resharding (resharding.py): its rows, a
# uint8 DTensor sharded like the parameter, and its replicated part.
ROWS_KEY = "mlorc_rows"
SHARED_KEY = "mlorc_shared"
