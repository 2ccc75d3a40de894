"""The sidecar: how an agent attaches to the mesh (identity, policy, signing, inbox, halts)."""
