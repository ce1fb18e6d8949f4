// Writing the form as TOML (lorakit, sd-scripts and lora-scripts read it): options by section,
// then the inline dataset tables. Reading TOML is the server's job (POST /api/config/import).

export function tomlValue(value) {
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(", ")}]`;
  return JSON.stringify(String(value)); // JSON's escapes are TOML's basic-string escapes
}

/** sections: [[name, [[option, value], ...]], ...]; datasets: {general?, datasets?} or null. */
export function toToml(sections, datasets, comment) {
  const lines = comment ? [`# ${comment}`, ""] : [];
  for (const [name, rows] of sections) {
    if (!rows.length) continue;
    lines.push(`[${name}]`, ...rows.map(([k, v]) => `${k} = ${tomlValue(v)}`), "");
  }
  if (datasets && datasets.general) {
    lines.push("[general]", ...Object.entries(datasets.general).map(([k, v]) => `${k} = ${tomlValue(v)}`), "");
  }
  for (const dataset of (datasets && datasets.datasets) || []) {
    lines.push("[[datasets]]");
    for (const [k, v] of Object.entries(dataset)) if (k !== "subsets") lines.push(`${k} = ${tomlValue(v)}`);
    lines.push("");
    for (const subset of dataset.subsets || []) {
      lines.push("[[datasets.subsets]]", ...Object.entries(subset).map(([k, v]) => `${k} = ${tomlValue(v)}`), "");
    }
  }
  return lines.join("\n");
}
