"""The plan: an ordered list of fusion rules turns the model's layers into stages.

A rule is a function ``rule(layers, i) -> (stage_factory, n) | None``: when the rule
matches ``layers[i:i+n]`` it returns how to build one stage for them.  Rules are tried
in registration order at each position; when none matches, the layer's own stage
(``layer.make_stage(index)``) is the fallback.  Adding a fused path = registering a rule;
adding a layer = a layer class with ``make_stage`` (plus its kernels and reference).
"""

RULES = []


def fusion_rule(fn):
    """Register ``fn`` as a fusion rule (decorator); rules run in registration order."""
    RULES.append(fn)
    return fn


def make_plan(layers):
    """Stages for built ``layers`` (a list), in order.  Returns [(stage, first, n)]."""
    plan = []
    i = 0
    while i < len(layers):
        for rule in RULES:
            hit = rule(layers, i)
            if hit is not None:
                factory, n = hit
                plan.append((factory(), i, n))
                i += n
                break
        else:
            plan.append((layers[i].make_stage(), i, 1))
            i += 1
    return plan
