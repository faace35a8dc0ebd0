"""Gateway surface (beta9 machine API): worker-machine registration and keepalive."""
