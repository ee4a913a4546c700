"""Cost of a compiled step from XLA's cost analysis, with each loop body counted per iteration."""

import re

import jax
from jax._src.lib import xla_client
from jaxlib import _hlo

_COST_KEYS = ("flops", "bytes accessed")
_WHILE = re.compile(r"\bwhile\(.*?condition=%?([\w.\-]+), body=%?([\w.\-]+)(.*)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALL = re.compile(r"\bcall\(.*?to_apply=%?([\w.\-]+)")


def xla_cost(analysis) -> dict[str, float]:
  """Return {key: value} of _COST_KEYS from a cost_analysis() dict or list of dicts."""
  parts = [analysis] if isinstance(analysis, dict) else list(analysis)
  return {k: sum(float(p.get(k, 0.0)) for p in parts) for k in _COST_KEYS}


def per_step_cost(compiled) -> tuple[dict[str, float], dict[str, float], int]:
  """Return (XLA's cost, the cost per step, loops of unknown trip count) of a compiled step.

  XLA's cost analysis counts a while loop's body once. Each body's own cost is XLA's analysis of
  a module of that body (the entry) and the computations it calls; a loop of n iterations then
  adds n - 1 more of it, and n times what its own inner loops add.
  """
  text = compiled.as_text()
  raw = xla_cost(compiled.cost_analysis())
  blocks: dict[str, str] = {}  # computation name -> its text, in the module's order
  preamble = []  # the stack frames the instructions' metadata refer to
  for block in re.split(r"\n(?=(?:ENTRY )?%?[\w.\-]+ \()", text.split("\n", 1)[1]):
    m = re.match(r"(?:ENTRY )?%?([\w.\-]+) \(", block)
    if m:
      blocks[m.group(1)] = re.sub(r"^ENTRY ", "", block)
    else:
      preamble.append(block)
  entry = re.search(r"^ENTRY %?([\w.\-]+) ", text, re.M).group(1)
  client = jax.devices()[0].client
  own: dict[str, dict[str, float]] = {}
  more: dict[str, dict[str, float]] = {}
  unknown = set()

  def cost_of(name: str) -> dict[str, float]:
    if name not in own:
      needed, todo = {name}, [name]
      while todo:
        for ref in re.findall(r"%([\w.\-]+)", blocks[todo.pop()]):
          if ref in blocks and ref not in needed:
            needed.add(ref)
            todo.append(ref)
      # The header's entry layout and aliasing describe the step: a bare one for the body.
      body = "\n".join(
        ("ENTRY " if k == name else "") + b for k, b in blocks.items() if k in needed
      )
      module = _hlo.hlo_module_from_text("\n".join([f"HloModule {name}", *preamble, body]))
      own[name] = xla_cost(xla_client._xla.hlo_module_cost_analysis(client, module))
    return own[name]

  def extra(name: str) -> dict[str, float]:
    if name in more:
      return more[name]
    out = dict.fromkeys(_COST_KEYS, 0.0)
    for line in blocks[name].splitlines():
      loop, call = _WHILE.search(line), _CALL.search(line)
      if loop:
        trip = _TRIP.search(loop.group(3))
        if trip is None:
          unknown.add(loop.group(2))
        n = int(trip.group(1)) if trip else 1
        body_cost, body_extra = cost_of(loop.group(2)), extra(loop.group(2))
        for k in _COST_KEYS:
          out[k] += (n - 1) * body_cost[k] + n * body_extra[k]
      elif call:
        for k, v in extra(call.group(1)).items():
          out[k] += v
    more[name] = out
    return out

  added = extra(entry)
  return raw, {k: raw[k] + added[k] for k in _COST_KEYS}, len(unknown)
