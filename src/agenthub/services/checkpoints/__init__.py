"""Workspace checkpoints: the content-addressed blob store their files live in, and the
checkpoints (manifests of blobs) taken of machine workspaces."""
