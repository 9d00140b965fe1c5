// js-disk-pressure: remove unused images only when the image filesystem is
// filling up, largest first, until the projected usage is back under a target.
//
// Settings (JSON, optional): {"thresholdPercent": 85, "targetPercent": 70}.
// Below the threshold, or when the runtime reports no filesystem capacity,
// nothing is removed. In manual mode it removes what the ImageList names.
// WIT u64 values (sizes, bytes, times) arrive as BigInt.

import { emit } from "scour:policy/log@0.1.0";

const DEFAULTS = { thresholdPercent: 85, targetPercent: 70 };

function parseSettings(text) {
  let value = {};
  if (text.trim() !== "") {
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw `settings are not valid JSON: ${e.message}`;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw "settings must be a JSON object";
    }
  }
  for (const key of Object.keys(value)) {
    if (!(key in DEFAULTS)) {
      throw `unknown setting \`${key}\`; known settings: ${Object.keys(DEFAULTS).join(", ")}`;
    }
  }
  const s = { ...DEFAULTS, ...value };
  for (const key of Object.keys(DEFAULTS)) {
    const v = s[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0 || v > 100) {
      throw `\`${key}\`: expected a percentage above 0 and at most 100`;
    }
  }
  if (s.targetPercent >= s.thresholdPercent) {
    throw "`targetPercent`: must be below `thresholdPercent`";
  }
  return s;
}

const GIB = 1024n * 1024n * 1024n;
function human(bytes) {
  return Number((bytes * 10n) / GIB) / 10 + " GiB";
}

function protectedReason(image) {
  if (image.inUse) return "in-use";
  if (image.pinned) return "pinned";
  if (image.excludedBy !== undefined) return `excluded: ${image.excludedBy}`;
  return undefined;
}

function manual(images) {
  return images.map((image) => {
    const kept = protectedReason(image);
    if (kept) return { id: image.id, action: "keep", reason: kept };
    if (image.listedBy === "*") return { id: image.id, action: "remove", reason: "prune" };
    if (image.listedBy !== undefined) {
      return { id: image.id, action: "remove", reason: `imagelist: ${image.listedBy}` };
    }
    return { id: image.id, action: "keep", reason: "not-listed" };
  });
}

function automatic(s, ctx, images) {
  const fs = ctx.imageFs;
  const keepAll = (why) =>
    images.map((image) => ({ id: image.id, action: "keep", reason: protectedReason(image) ?? why }));
  if (fs === undefined || fs.capacityBytes === undefined || fs.capacityBytes === 0n) {
    return keepAll("disk-pressure: image filesystem usage unknown");
  }
  const percent = Number((fs.usedBytes * 1000n) / fs.capacityBytes) / 10;
  if (percent < s.thresholdPercent) {
    return keepAll(`disk-pressure: ${percent}% used, under the ${s.thresholdPercent}% threshold`);
  }
  const target = (fs.capacityBytes * BigInt(Math.round(s.targetPercent * 10))) / 1000n;
  let toFree = fs.usedBytes - target;
  // Largest first; among equals, the one seen first goes first.
  const candidates = images
    .filter((image) => protectedReason(image) === undefined)
    .sort((a, b) => (a.size === b.size ? Number(a.firstSeen - b.firstSeen) : a.size > b.size ? -1 : 1));
  const remove = new Set();
  for (const image of candidates) {
    if (toFree <= 0n) break;
    remove.add(image.id);
    toFree -= image.size;
  }
  emit("info", `${percent}% used: removing ${remove.size} of ${candidates.length} removable images`);
  const why = `disk-pressure: ${percent}% used, over ${s.thresholdPercent}%`;
  return images.map((image) => {
    const kept = protectedReason(image);
    if (kept) return { id: image.id, action: "keep", reason: kept };
    if (remove.has(image.id)) {
      return { id: image.id, action: "remove", reason: `${why}; largest first (${human(image.size)}) toward ${s.targetPercent}%` };
    }
    return { id: image.id, action: "keep", reason: `${why}; enough freed to reach ${s.targetPercent}%` };
  });
}

// The functions scour calls: the `cleanup` interface of wit/policy.wit.
export const cleanup = {
  info() {
    return { name: "js-disk-pressure", version: "0.1.0", maxFindings: 0 };
  },

  validateSettings(settings) {
    parseSettings(settings);
  },

  // Sizes, not vulnerabilities: nothing to scan.
  select(settings, ctx, images) {
    return [];
  },

  decide(settings, ctx, images) {
    const s = parseSettings(settings);
    return ctx.mode === "manual" ? manual(images) : automatic(s, ctx, images);
  },
};
