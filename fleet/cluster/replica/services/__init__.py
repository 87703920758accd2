"""The replica's services, one per model type (llm, embedding, image, ocr, speech, transcription):
each holds its engine, its queue and its batches. They may import the replica's shared parts
(batcher, generation_scheduler) and fleet/channel; model_actor.py imports them, and they never
import it."""
