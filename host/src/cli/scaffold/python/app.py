"""{{name}}: a scour cleanup policy.

Removes images that no container uses and that scour first saw more than
`maxAgeDays` ago (default 30); keeps in-use, pinned and excluded images.
Replace `decide` with your own rules; `wit/policy.wit` documents every field.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Action, Decision, PolicyInfo

DAY = 86_400
DEFAULT_MAX_AGE_DAYS = 30


def max_age_days(settings: str) -> int:
    """Settings are JSON, e.g. {"maxAgeDays": 14}; errors name the key."""
    if not settings.strip():
        return DEFAULT_MAX_AGE_DAYS
    try:
        value = json.loads(settings)
    except ValueError as e:
        raise Err(f"settings are not valid JSON: {e}")
    if not isinstance(value, dict):
        raise Err("settings must be a JSON object")
    for key in value:
        if key != "maxAgeDays":
            raise Err(f"unknown setting `{key}`; known settings: maxAgeDays")
    days = value.get("maxAgeDays", DEFAULT_MAX_AGE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise Err("`maxAgeDays`: expected a whole number of days, at least 1")
    return days


class Cleanup(exports.Cleanup):
    """The functions scour calls (the `cleanup` interface of wit/policy.wit)."""

    def info(self):
        return PolicyInfo(name="{{name}}", version="0.1.0", max_findings=0)

    def validate_settings(self, settings):
        max_age_days(settings)

    def select(self, settings, ctx, images):
        # This policy does not look at vulnerabilities, so nothing is scanned.
        return []

    def decide(self, settings, ctx, images):
        max_age = max_age_days(settings) * DAY
        decisions = []
        for image in images:
            age = max(0, ctx.now - image.first_seen)
            if image.in_use:
                action, reason = Action.KEEP, "in-use"
            elif image.pinned:
                action, reason = Action.KEEP, "pinned"
            elif image.excluded_by is not None:
                action, reason = Action.KEEP, f"excluded: {image.excluded_by}"
            elif age > max_age:
                action, reason = Action.REMOVE, f"not in use, first seen {age // DAY} days ago"
            else:
                action, reason = Action.KEEP, "recent"
            decisions.append(Decision(id=image.id, action=action, reason=reason))
        return decisions
