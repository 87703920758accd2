"""The replica channel, both of its ends: the replica's (replica_end) and the API's (api_end),
their handshake (auth), their frames (codec) and their sends that never block (sender). A room
of its own because both sides use it: it imports neither fleet/api nor any module of
fleet/cluster."""
