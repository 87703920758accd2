"""Commands that talk to a running cluster over HTTP, with Xinference's verbs and flags."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet.client import Client
from fleet.settings import DEFAULT_ENDPOINT

# Piped output is not cut to 80 columns: scripts grep it.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

_endpoint = click.option(
    "-e", "--endpoint", envvar="FLEET_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True,
    help="Fleet's API address.",
)
_API_KEY_META = "fleet.api_key"


def _remember_api_key(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_API_KEY_META] = value


# Kept in the click context for client_for, so that no command's signature has to carry it.
_api_key = click.option("-ak", "--api-key", envvar="FLEET_API_KEY", expose_value=False,
                        callback=_remember_api_key, metavar="KEY",
                        help="API key, when the cluster has keys on (or FLEET_API_KEY).")


def endpoint_option(command: Any) -> Any:
    """Where the cluster is and the key to it: every command that talks to a cluster."""
    return _endpoint(_api_key(command))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def client_for(endpoint: str) -> Client:
    # A few seconds of patience: `fleet local & fleet launch ...` typed in one go should work.
    context = click.get_current_context(silent=True)
    api_key = context.meta.get(_API_KEY_META) if context is not None else None
    return Client(endpoint, api_key=api_key, connect_wait_s=5.0)


def _size(value: str | None) -> Any:
    """`7` -> 7; `0_5` and `1.5` stay text (Python's int() would read `0_5` as 5)."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _watch_launch(client: Client, uid: str) -> dict[str, Any]:
    """A live progress bar until the launch is ready or failed."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(f"launching {uid}", total=1.0, stage="")
        while True:
            state = client.launch_progress(uid)
            progress.update(task, completed=state["progress"], stage=state.get("stage") or "")
            if state["status"] in ("ready", "failed", "idle"):
                return state
            time.sleep(0.25)


def _option_value(text: str) -> Any:
    """`4096` -> 4096, `0.5` -> 0.5, `true` -> True, `none` -> None, anything else as text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _extra_kwargs(args: list[str]) -> dict[str, Any]:
    """Engine arguments given as `--name value` (or `--name=value`) after the known options,
    as Xinference's CLI takes them: `fleet launch -n NAME --context_length 4096`."""
    kwargs: dict[str, Any] = {}
    items = list(args)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) < 3:
            raise click.UsageError(f"unexpected argument {item!r}; engine arguments are --name value")
        name, _, value = item[2:].partition("=")
        if not value:
            if not items or items[0].startswith("--"):
                raise click.UsageError(f"engine argument --{name} needs a value")
            value = items.pop(0)
        kwargs[name.replace("-", "_")] = _option_value(value)
    return kwargs


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@endpoint_option
@click.option("-n", "--model-name", required=True, help="Name in the catalogue.")
@click.option("-t", "--model-type", default=None,
              help="LLM, embedding, rerank, image or audio [default: found by name].")
@click.option("-en", "--model-engine", default=None, help="Engine; chosen for you if omitted.")
@click.option("-u", "--model-uid", default=None, help="UID to serve it under [default: name].")
@click.option("-s", "--size-in-billions", default=None, help="Model size, e.g. 7 or 0_5.")
@click.option("-f", "--model-format", default=None, help="pytorch, gguf, ...")
@click.option("-q", "--quantization", default=None)
@click.option("-r", "--replica", default=1, show_default=True, type=int)
@click.option("--n-gpu", default="auto", show_default=True, help="GPUs per replica, or 'none'.")
@click.option("--gpu-idx", default=None, callback=lambda _c, _p, v: _gpu_indices(v),
              help="Run on these GPUs (e.g. 0 or 0,1); shared with other replicas when the "
                   "memory fits.")
@click.option("--model-path", default=None, help="Local weights: skips the download.")
@click.option("--worker-ip", default=None, help="Place it on this worker.")
@click.option("--keep-alive", default=None, metavar="DURATION",
              help="Unload it after this long without a request (30s, 10m, 1h; -1 never); its "
                   "next request loads it again, and a request's own keep_alive changes it. "
                   "Default: the cluster's (never).")
@click.option("--alias", "aliases", multiple=True, metavar="NAME",
              help="Another name the model answers to (repeat for more), e.g. "
                   "claude-sonnet-4-5; `fleet alias` changes them while it serves.")
@click.option("--dry-run", is_flag=True,
              help="Show the engine, the memory it needs, where it would go and which idle-able "
                   "models it would unload to make room; launch nothing.")
@click.option("--skip-memory-check", is_flag=True,
              help="Launch even where the memory estimate says it will not fit.")
@json_option
@click.pass_context
def launch(ctx: click.Context, endpoint: str, model_name: str, model_type: str | None,
           model_engine: str | None, model_uid: str | None, size_in_billions: str | None,
           model_format: str | None, quantization: str | None, replica: int, n_gpu: str,
           gpu_idx: list[int] | None, model_path: str | None, worker_ip: str | None,
           keep_alive: str | None, aliases: tuple[str, ...], dry_run: bool,
           skip_memory_check: bool, as_json: bool) -> None:
    """Launch a model and wait until it serves. Engine arguments follow as --name value
    (e.g. --context_length 4096 --max_num_seqs 8)."""
    client = client_for(endpoint)
    arguments = dict(
        model_engine=model_engine, model_size_in_billions=_size(size_in_billions),
        model_format=model_format, quantization=quantization, replica=replica,
        n_gpu=None if n_gpu.lower() == "none" else n_gpu, model_path=model_path,
        worker_ip=worker_ip, **_extra_kwargs(ctx.args),
    )
    if gpu_idx is not None:
        arguments["gpu_idx"] = gpu_idx
    arguments.update({k: v for k, v in (("keep_alive", keep_alive),
                                         ("aliases", list(aliases) or None)) if v is not None})
    if dry_run:
        if model_uid is not None:  # the model it would replace is not one to unload for it
            arguments["model_uid"] = model_uid
        _dry_run(client.estimate_launch(model_name, model_type=model_type, **arguments), as_json)
        return
    if skip_memory_check:
        arguments["skip_memory_check"] = True
    uid = client.launch_model(model_name, model_type=model_type, wait_ready=False,
                              model_uid=model_uid, **arguments)
    if not as_json:
        described = client.describe_model(uid)
        console.print(f"engine: {described['model_engine']} ({described.get('model_engine_reason')})")
    state = _watch_launch(client, uid) if sys.stderr.isatty() or not as_json else None
    if state is None:
        while (state := client.launch_progress(uid))["status"] not in ("ready", "failed", "idle"):
            time.sleep(0.25)
    if state["status"] == "failed":
        raise click.ClickException(f"launch of {uid} failed: {state['error']}")
    if state["status"] == "idle":  # unloaded already (a keep_alive of 0): served on demand
        console.print(f"Model [bold]{uid}[/bold] is idle: its next request loads it.")
        return
    described = client.describe_model(uid)
    if as_json:
        _print_json({"model_uid": uid, **described})
    else:
        console.print(f"Model [bold]{uid}[/bold] is ready on engine {described['model_engine']}.")


def _human(size: int | None) -> str:
    if size is None:
        return "unknown"
    return f"{size / 2**20:.0f} MiB" if size < 2**30 else f"{size / 2**30:.1f} GiB"


def _dry_run(plan: dict[str, Any], as_json: bool) -> None:
    """The estimate as a table (or JSON); exit status 1 when it does not fit."""
    if as_json:
        _print_json(plan)
    else:
        estimate = plan.get("estimate") or {}
        inputs = estimate.get("inputs", {})
        size = str(plan.get("model_size_in_billions") or "-").replace("_", ".")
        kv = _human(estimate.get("kv_cache"))
        if estimate.get("kv_cache"):
            kv += (f" ({inputs.get('context_length')} tokens x {inputs.get('sequences')} "
                   f"sequence(s), {inputs.get('kv_dtype')})")
        weights = _human(estimate.get("weights"))
        if inputs.get("weights_from"):
            loaded = inputs.get("load_dtype")
            loaded = "as stored" if loaded in (None, "as stored") else f"as {loaded}"
            weights += f" (from {inputs['weights_from']}, loaded {loaded})"
        rows = [["model", f"{plan['model_name']} ({plan['model_type']})"],
                ["engine", f"{plan['model_engine']} ({plan['engine_reason']})"],
                ["variant", f"{plan['model_format']} {size}B, {plan['quantization']}"],
                ["weights", weights], ["KV cache", kv],
                ["overhead", _human(estimate.get("overhead"))],
                ["total per replica", estimate.get("summary", "unknown")]]
        rows += [["note", note] for note in estimate.get("notes", [])]
        _table(f"Estimate for {plan['model_name']} on {estimate.get('device', '?')}",
               ["", "value"], rows)
        _table("Workers", ["Worker", "Device", "Free", "Needs", "Fits"],
               [[w["address"], w["where"] or w["device"],
                 _human(w["free"]) if w["free"] is not None else w["problem"],
                 _human(w["needed"]), "yes" if w["fits"] else "no"] for w in plan["workers"]])
        for worker, uids in (plan.get("would_unload") or {}).items():
            console.print(f"Would unload {', '.join(uids)} on {worker} to make room (least "
                          "recently used, with a keep_alive).")
        if plan["fits"]:
            where = ", ".join(p["worker"] + (f" (GPU {','.join(map(str, p['gpus']))})"
                                             if p.get("gpus") else "")
                              for p in plan["placements"])
            console.print(f"Would launch on {where}. Nothing was launched (dry run).")
        else:
            console.print(f"Would be refused: {plan['reason']}")
    if not plan["fits"]:
        sys.exit(1)


def _gpu_indices(value: str | None) -> list[int] | None:
    """`0,1` -> [0, 1]; a usage error naming the value otherwise."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: GPU indices, comma-separated (e.g. 0 or 0,1)",
                                 param_hint="--gpu-idx") from None


def _uid_and_aliases(uid: str, model: dict[str, Any]) -> str:
    return "\n".join([uid, *(f"= {alias}" for alias in model.get("aliases") or ())])


@click.command("list")
@endpoint_option
@json_option
def list_models(endpoint: str, as_json: bool) -> None:
    """List running models."""
    models = client_for(endpoint).list_models()
    if as_json:
        _print_json(list(models.values()))
        return
    rows = [[_uid_and_aliases(uid, m), m["model_type"], m["model_name"], m["model_engine"], m["model_format"],
             str(m["model_size_in_billions"] or "-").replace("_", "."), m["quantization"],
             f"{m.get('ready_replicas', m['replica'])}/{m['replica']}", m["status"],
             ",".join(m.get("accelerators") or []) or "-"]
            for uid, m in models.items()]
    _table("Running models", ["UID", "Type", "Name", "Engine", "Format", "Size (B)",
                              "Quantization", "Ready", "Status", "GPUs"], rows)


@click.command()
@endpoint_option
@click.option("-u", "--model-uid", "uid_option", default=None)
@click.argument("model_uid", required=False)
def terminate(endpoint: str, uid_option: str | None, model_uid: str | None) -> None:
    """Terminate a running model and free its memory."""
    uid = uid_option or model_uid
    if not uid:
        raise click.UsageError("give the model uid: fleet terminate -u UID")
    client_for(endpoint).terminate_model(uid)
    console.print(f"Model {uid} terminated.")


@click.command()
@endpoint_option
@click.option("-t", "--model-type", default="LLM", show_default=True)
@click.option("--file", "file_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--persist/--no-persist", default=True, show_default=True)
def register(endpoint: str, model_type: str, file_path: str, persist: bool) -> None:
    """Register a custom model from its JSON description."""
    try:
        family = json.loads(Path(file_path).read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{file_path} is not valid JSON: {exc}") from None
    client_for(endpoint).register_model(model_type, family, persist)
    console.print(f"Registered {family.get('model_name')} ({model_type}).")


@click.command()
@endpoint_option
@click.option("-t", "--model-type", default="LLM", show_default=True)
@click.option("-n", "--model-name", required=True)
def unregister(endpoint: str, model_type: str, model_name: str) -> None:
    """Remove a custom model registration."""
    client_for(endpoint).unregister_model(model_type, model_name)
    console.print(f"Unregistered {model_name} ({model_type}).")


@click.command()
@endpoint_option
@click.option("-t", "--model-type", default="LLM", show_default=True)
@click.option("--detailed", is_flag=True)
@json_option
def registrations(endpoint: str, model_type: str, detailed: bool, as_json: bool) -> None:
    """List the models that can be launched: built-in and custom."""
    rows = client_for(endpoint).list_model_registrations(model_type, detailed=True)
    if as_json:
        _print_json(rows if detailed else [
            {"model_name": r["model_name"], "is_builtin": r["is_builtin"]} for r in rows])
        return
    table_rows = []
    for r in rows:
        formats = sorted({s["model_format"] for s in r.get("model_specs", [])})
        sizes = sorted({str(s.get("model_size_in_billions")).replace("_", ".")
                        for s in r.get("model_specs", []) if s.get("model_size_in_billions")})
        table_rows.append([r["model_name"], "built-in" if r["is_builtin"] else "custom",
                           ", ".join(formats), ", ".join(sizes)])
    _table(f"{model_type} models", ["Name", "Source", "Formats", "Sizes (B)"], table_rows)


@click.command()
@endpoint_option
@click.option("-n", "--model-name", "name_option", default=None)
@click.option("-t", "--model-type", default=None)
@click.argument("model_name", required=False)
@json_option
def engine(endpoint: str, name_option: str | None, model_type: str | None,
           model_name: str | None, as_json: bool) -> None:
    """Show which engines can run a model, and why the others cannot."""
    name = name_option or model_name
    if not name:
        raise click.UsageError("give the model name: fleet engine MODEL")
    result = client_for(endpoint).query_engines(name, model_type, detailed=True)
    if as_json:
        _print_json(result)
        return
    rows = [[e["engine"], "yes" if e["available"] else "no", ", ".join(e["formats"]),
             ", ".join(e["quantizations"]), e["reason"] or ""] for e in result["engines"]]
    _table(f"Engines for {name} ({result['model_type']})",
           ["Engine", "Can run", "Formats", "Quantizations", "Why not"], rows)
    options = [[e["engine"], o["name"], _option_type(o), o["help"]]
               for e in result["engines"] if e["available"] for o in e.get("launch_options", [])]
    if options:
        _table("Launch options (fleet launch ... --name value)",
               ["Engine", "Option", "Type", "Meaning"], options)


def _option_type(option: dict[str, Any]) -> str:
    """`integer 1-256`, `integer >= 1`, `boolean`, `mean | cls | last`."""
    low, high = option.get("minimum"), option.get("maximum")
    if low is None and high is None:
        return option["type"]
    if high is None:
        return f"{option['type']} >= {low}"
    return f"{option['type']} {low}-{high}"


@click.command()
@endpoint_option
@json_option
def status(endpoint: str, as_json: bool) -> None:
    """Show the cluster: workers, their resources and replicas."""
    info = client_for(endpoint).cluster_info()
    if as_json:
        _print_json(info)
        return
    rows = []
    for node in info:
        resources = node.get("resources", {})
        memory = resources.get("memory_total")
        rows.append([node["node_type"], node["address"], resources.get("cpu_count", ""),
                     f"{memory / 2**30:.1f} GiB" if memory else "",
                     len(resources.get("gpus", [])) if resources else "",
                     ", ".join(node.get("replicas", []))])
    _table("Cluster", ["Node", "Address", "CPUs", "Memory", "GPUs", "Replicas"], rows)


MODEL_COMMANDS = [launch, list_models, terminate, register, unregister, registrations, engine,
                  status]

