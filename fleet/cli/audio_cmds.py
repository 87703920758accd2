"""`fleet transcribe` and `fleet speak`: call a launched audio model from the terminal.
`transcribe` prints the transcript (text, or srt/vtt/json with --format); `speak` writes the
spoken text to a file, its format told by the file's extension (.mp3, .opus, .aac, .flac,
.wav, .pcm), the bytes written as they arrive."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fleet.cli.generation_cmds import uid_option
from fleet.cli.model_cmds import client_for, endpoint_option
from fleet.client.audio import AudioModelHandle

_SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


def _audio_model(endpoint: str, model_uid: str) -> AudioModelHandle:
    model = client_for(endpoint).get_model(model_uid)
    if not isinstance(model, AudioModelHandle):
        raise click.ClickException(f"model {model_uid} is not an audio model")
    return model


@click.command()
@endpoint_option
@uid_option
@click.argument("audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-l", "--language", default=None, help="The audio's language (ISO-639-1); "
              "default: detected.")
@click.option("--prompt", default=None, help="Text that came before, to steer spelling.")
@click.option("-f", "--format", "response_format", default="text", show_default=True,
              type=click.Choice(["text", "json", "verbose_json", "srt", "vtt"]))
@click.option("--translate", is_flag=True, help="Translate to English instead.")
def transcribe(endpoint: str, model_uid: str, audio: Path, language: str | None,
               prompt: str | None, response_format: str, translate: bool) -> None:
    """Transcribe an audio file (any format FFmpeg reads)."""
    model = _audio_model(endpoint, model_uid)
    call = model.translations if translate else model.transcriptions
    answer = call(audio, language=language, prompt=prompt, response_format=response_format)
    click.echo(json.dumps(answer, indent=2) if isinstance(answer, dict) else answer.rstrip("\n"))


@click.command()
@endpoint_option
@uid_option
@click.argument("text")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write; its extension is the format (default mp3).")
@click.option("--voice", default="", help="The model's voice, or one of OpenAI's names; "
              "default: the model's first.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="0.25 to 4.")
def speak(endpoint: str, model_uid: str, text: str, output: Path, voice: str,
          speed: float) -> None:
    """Speak TEXT into a file."""
    extension = output.suffix.lower().lstrip(".")
    response_format = extension if extension in _SPEECH_FORMATS else "mp3"
    model = _audio_model(endpoint, model_uid)
    with output.open("wb") as file:
        for data in model.speech(text, voice=voice, response_format=response_format,
                                 speed=speed, stream=True):
            file.write(data)
    click.echo(str(output))


AUDIO_COMMANDS = (transcribe, speak)
