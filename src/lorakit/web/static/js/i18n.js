// The pages' two languages. English is the text in the code; Chinese comes from
// i18n/zh-CN.json ("strings": English -> Chinese, "messages": patterns for the library's
// messages). The choice is remembered; the first visit follows the browser's language.
// Every t() call takes a literal string, so a test can list them all and check the catalogue.

const KEY = "lorakit-language";
export const LANGUAGES = { en: "English", "zh-CN": "中文" };
let language = "en";
let strings = {};
let patterns = [];
export const missing = new Set(); // strings shown without a translation (the tests read it)

export function chosenLanguage() {
  const saved = localStorage.getItem(KEY);
  if (saved && saved in LANGUAGES) return saved;
  const wanted = navigator.languages || [navigator.language || "en"];
  return wanted.some((l) => l.toLowerCase().startsWith("zh")) ? "zh-CN" : "en";
}

export async function initLanguage() {
  language = chosenLanguage();
  document.documentElement.lang = language;
  if (language !== "en") {
    const response = await fetch(`/static/i18n/${language}.json`);
    const catalogue = await response.json();
    strings = catalogue.strings || {};
    patterns = (catalogue.messages || []).map((m) => [new RegExp(m.pattern), m.text]);
  }
  window.lorakitMissing = missing;
}

export function setLanguage(value) {
  localStorage.setItem(KEY, value);
  location.reload();
}

export const currentLanguage = () => language;
export const isChinese = () => language === "zh-CN";

function fill(text, params) {
  return params ? text.replace(/\{(\w+)\}/g, (all, k) => (k in params ? String(params[k]) : all)) : text;
}

/** The text in the page's language; `{name}` is replaced from `params`. */
export function t(text, params) {
  if (language === "en") return fill(text, params);
  const found = strings[text];
  if (found === undefined) {
    missing.add(text);
    return fill(text, params);
  }
  return fill(found, params);
}

/** A message from the library (a warning, a dataset problem): translated when a pattern of the
 * catalogue matches, else null (the caller shows the English text, marked as English). */
export function translateMessage(message) {
  if (language === "en") return message;
  for (const [pattern, text] of patterns) {
    const m = pattern.exec(message);
    if (m) return text.replace(/\$(\d)/g, (all, i) => m[Number(i)] ?? "");
  }
  return null;
}

/** The option help in the page's language (English from the option table, Chinese beside it). */
export const optionHelp = (option) => (language === "zh-CN" ? option.help_zh || option.help : option.help);
