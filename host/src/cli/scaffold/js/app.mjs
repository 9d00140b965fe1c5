// {{name}}: a scour cleanup policy.
//
// Removes images that no container uses and that scour first saw more than
// `maxAgeDays` ago (default 30); keeps in-use, pinned and excluded images.
// Replace `decide` with your own rules; `wit/policy.wit` documents every field.
// WIT u64 values (now, firstSeen, size) arrive as BigInt.

const DAY = 86400n;
const DEFAULT_MAX_AGE_DAYS = 30;

// Settings are JSON, e.g. {"maxAgeDays": 14}; errors name the key.
function maxAgeDays(settings) {
  if (settings.trim() === "") return DEFAULT_MAX_AGE_DAYS;
  let value;
  try {
    value = JSON.parse(settings);
  } catch (e) {
    throw `settings are not valid JSON: ${e.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw "settings must be a JSON object";
  }
  for (const key of Object.keys(value)) {
    if (key !== "maxAgeDays") throw `unknown setting \`${key}\`; known settings: maxAgeDays`;
  }
  const days = value.maxAgeDays ?? DEFAULT_MAX_AGE_DAYS;
  if (!Number.isInteger(days) || days < 1) {
    throw "`maxAgeDays`: expected a whole number of days, at least 1";
  }
  return days;
}

// The functions scour calls: the `cleanup` interface of wit/policy.wit.
export const cleanup = {
  info() {
    return { name: "{{name}}", version: "0.1.0", maxFindings: 0 };
  },

  validateSettings(settings) {
    maxAgeDays(settings);
  },

  // This policy does not look at vulnerabilities, so nothing is scanned.
  select(settings, ctx, images) {
    return [];
  },

  decide(settings, ctx, images) {
    const maxAge = BigInt(maxAgeDays(settings)) * DAY;
    return images.map((image) => {
      const age = ctx.now > image.firstSeen ? ctx.now - image.firstSeen : 0n;
      let action = "keep";
      let reason;
      if (image.inUse) reason = "in-use";
      else if (image.pinned) reason = "pinned";
      else if (image.excludedBy !== undefined) reason = `excluded: ${image.excludedBy}`;
      else if (age > maxAge) {
        action = "remove";
        reason = `not in use, first seen ${age / DAY} days ago`;
      } else reason = "recent";
      return { id: image.id, action, reason };
    });
  },
};
