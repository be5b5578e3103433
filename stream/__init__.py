"""vibescope analyzer library: media in, results out (no sockets, no Redis)."""
