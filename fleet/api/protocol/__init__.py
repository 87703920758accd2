"""What crosses the HTTP edge: request bodies validated once (one module per modality, with the
field types they share in fields), uploaded images and audio, transcript formats, and the
answers' schemas for the OpenAPI document. Plain data: it imports no route, nothing of auth, and
nothing of fleet/cluster or fleet/channel."""
