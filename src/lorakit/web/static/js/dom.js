// Small DOM helpers: h() builds elements, and a few formatters shared by the pages.
import { t, translateMessage } from "./i18n.js";

/** h("button", {class: "x", onclick: f}, "text", child, [more]) -> element. */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" && !svg) el.value = value;
    else if (key === "checked" || key === "selected") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Text that is data, not UI (file names, tags, option names): never translated. */
export const raw = (text, tag = "span", attrs = {}) => h(tag, { translate: "no", ...attrs }, text);

/** A message from the library, translated when the catalogue knows it, else shown as English. */
export function message(text) {
  const translated = translateMessage(text);
  if (translated !== null) return h("span", {}, translated);
  return h("span", { lang: "en", translate: "no" }, text);
}

let ids = 0;
export const uid = (prefix = "f") => `${prefix}-${++ids}`;

/** A labelled field: <label for> + the control (and an optional hint below). */
export function field(labelText, control, hint) {
  if (!control.id) control.id = uid();
  const parts = [h("label", { for: control.id }, labelText), control];
  if (hint) parts.push(h("p", { class: "hint", id: `${control.id}-hint` }, hint));
  if (hint) control.setAttribute("aria-describedby", `${control.id}-hint`);
  return h("div", { class: "field" }, parts);
}

export function number(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (n !== 0 && (Math.abs(n) < 1e-3 || Math.abs(n) >= 1e5)) return n.toExponential(2);
  return String(Number(n.toPrecision(digits)));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "–";
  const s = Math.round(Number(seconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (hours) return t("{h} h {m} min", { h: hours, m: minutes });
  if (minutes) return t("{m} min {s} s", { m: minutes, s: rest });
  return t("{s} s", { s: rest });
}

/** A picture's thumbnail URL (cached by the server). */
export const thumb = (location, size = 160) => `/api/thumb?size=${size}&location=${encodeURIComponent(location)}`;
export const fileUrl = (location) => `/api/files/${location.split("/").map(encodeURIComponent).join("/")}`;
export const baseName = (location) => (location || "").split("/").pop();

/** A short message at the bottom of the screen (screen readers hear it too). */
export function toast(text, kind = "ok") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}` }, text);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 4000);
}

/** A banner at the top of a page's section: warnings, errors, the collapse advice. */
export function banner(kind, ...children) {
  return h("div", { class: `banner ${kind}`, role: kind === "error" ? "alert" : "status" }, children);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A <select> of value -> label pairs. */
export function select(options, value, attrs = {}) {
  return h(
    "select",
    attrs,
    options.map(([v, label]) => h("option", { value: v, selected: String(v) === String(value) }, label)),
  );
}

/** A time as 2024-05-01 14:03 (the same in every language). */
export function when(value) {
  if (value === null || value === undefined || value === "") return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const two = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}`;
}
