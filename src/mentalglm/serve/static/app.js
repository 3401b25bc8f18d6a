/* MentalGLM web page: reads posts (pasted or from a TXT/CSV/JSONL file, parsed here in the browser), calls
 * POST v1/analyze and renders the results. Every piece of text is put in the page with textContent, never
 * as HTML. The post text stays in this page's memory only: downloads are built from the results, which carry
 * no post text (schema.py), and any text-like field a server might add is dropped as well. */
"use strict";

(() => {
  const I18N = {
    "zh-CN": {
      pageTitle: "MentalGLM 心理健康分析",
      skipToContent: "跳到主要内容",
      title: "MentalGLM 中文社交媒体心理健康分析",
      subtitle: "可解释的情绪、认知扭曲与自杀风险分析",
      switchLang: "English",
      switchLangLabel: "Switch the interface to English",
      bannerTitle: "决策支持，并非诊断",
      bannerText: "结果由模型自动生成，可能有误，必须由合格的专业人员复核。如果有人处于危险之中，请拨打心理援助热线 12356，紧急情况拨打 120 或 110。",
      inputLegend: "输入帖子",
      sourceLabel: "输入方式",
      sourcePaste: "粘贴文本",
      sourceFile: "上传文件",
      textLabel: "帖子文本",
      textHint: "粘贴一条帖子；勾选“每行一条帖子”时，每一行作为一条单独的帖子（空行会被跳过）。",
      perLine: "每行一条帖子",
      fileLabel: "选择 TXT、CSV 或 JSONL 文件",
      fileHint: "TXT：每行一条帖子；CSV：第一行为表头，文本列名为 text、content 或 post；JSONL：每行一个含 text 字段的 JSON 对象。文件只在浏览器中读取，编码须为 UTF-8。",
      tasksLegend: "分析任务",
      tasksLoading: "正在加载任务列表…",
      tasksFailed: "无法加载任务列表（{error}）。将使用服务端的默认任务。",
      tasksNone: "服务端没有提供任务列表，将使用服务端的默认任务。",
      explain: "附带解释（由语言模型撰写，较慢）",
      apiKeySummary: "API 密钥（可选）",
      apiKeyLabel: "API 密钥",
      apiKeyHint: "仅当服务要求密钥时填写；只保存在本页面的内存中。",
      run: "开始分析",
      cancel: "取消",
      resultsHeading: "分析结果",
      downloadLabel: "下载结果（不含帖子原文）：",
      privacyNote: "帖子原文只保存在本页面的内存中，用于高亮证据；下载的结果文件不包含原文（解释和证据中可能引用原文片段）。",
      // file reading
      fileLoaded: "已读取“{name}”：{posts} 条帖子{errors}{blank}。",
      fileLoadedErrors: "，{n} 行有误（见结果）",
      fileLoadedBlank: "，跳过 {n} 个空行",
      fileErrUnknownType: "不支持的文件类型“{name}”：请上传 .txt、.csv 或 .jsonl 文件。",
      fileErrTooLarge: "文件太大（{size} MB）：网页最多读取 {max} MB，请拆分文件或使用命令行 mentalglm analyze --input。",
      fileErrEncoding: "文件不是有效的 UTF-8 文本：请先转换为 UTF-8（例如 iconv -f GBK -t UTF-8 in.csv > out.csv）。",
      fileErrBinary: "这看起来是二进制文件（含 NUL 字节），不是帖子文本文件。",
      fileErrEmpty: "文件是空的：没有可分析的帖子。",
      fileErrCsvNoColumn: "CSV 文件没有文本列：表头需要包含 text、content 或 post 之一（现有列：{columns}）。",
      fileErrCsvQuote: "CSV 文件第 {line} 行的引号没有闭合。",
      fileErrJsonlNoText: "JSONL 文件中没有一行是含字符串 text 字段的 JSON 对象（第一行的问题：{first}）。",
      fileErrRead: "无法读取文件：{error}",
      rowErrFields: "该行有 {n} 个字段，表头有 {m} 个",
      rowErrJson: "不是有效的 JSON（{error}）",
      rowErrNotObject: "每行应是一个 JSON 对象",
      rowErrNoText: "缺少字符串类型的 text 字段（现有键：{keys}）",
      rowErrEmpty: "帖子为空",
      noFile: "请先选择一个文件。",
      // run
      errNoPosts: "没有可分析的帖子：请粘贴文本或上传文件。",
      errNoTasks: "请至少选择一个任务。",
      errUnauthorized: "服务需要有效的 API 密钥（HTTP {status}）：请在“API 密钥”中填写。",
      errHttp: "服务返回错误（HTTP {status}）：{detail}",
      errNetwork: "无法连接到服务：{error}",
      errMismatch: "服务返回的结果数量（{got}）与提交的帖子数量（{sent}）不一致。",
      running: "正在分析…已完成 {done} / {total} 条",
      cancelled: "已取消：显示已完成的 {done} / {total} 条。",
      done: "分析完成：{total} 条。",
      summary: "共 {total} 条：成功 {ok} 条，错误 {errors} 条，高风险 {high} 条。",
      meta: "引擎：{engine}；模型：{model}",
      noLlm: "无语言模型",
      // result cards
      postHeading: "帖子 {id}",
      chars: "{n} 字",
      outOfDomain: "非中文内容（已分析，结果可能不可靠）",
      outsideTrainingDomain: "不像该模型的训练帖子（相似度 {similarity}）：结果可能不可靠，请人工阅读原帖",
      piiScrubbed: "已脱敏：{items}",
      postTextCaption: "帖子原文（仅在本页显示，高亮处为解释引用的证据）",
      crisisHeading: "高自杀风险提示",
      crisisFallback: "这条帖子显示出较高的自杀风险。如果你或你身边的人有危险，请立即求助：",
      crisisFallback12356: "全国心理援助热线",
      crisisFallback120: "急救电话",
      crisisFallback110: "报警电话",
      errorBadge: "错误",
      errorLine: "第 {line} 行：{error}",
      errorNoLine: "{error}",
      engine: "引擎：{engine}",
      invalid: "无效（INVALID）：模型的回答中没有可识别的标签",
      noLabels: "没有判定的标签",
      nothingEvident: "未见明显表现",
      supportHeading: "支持资源",
      confidenceLabel: "{label} 的置信度",
      noConfidence: "无置信度",
      allConfidences: "全部标签的概率",
      explanationHeading: "解释",
      evidenceHeading: "证据（在原文中高亮）",
      evidenceItem: "第 {start}–{end} 字",
      evidenceSupports: "支持「{label}」",
      evidenceWeight: "去掉这句，「{label}」的概率下降 {drop} 个百分点",
      noExplanation: "没有解释。",
      explanationError: "没有生成解释：{error}",
      taskError: "错误：{error}",
      verifierAgrees: "校验分类器同意",
      verifierDisagrees: "校验分类器不同意",
      qcPassed: "质量检查通过",
      qcFailed: "质量检查未通过：{reasons}",
      attempts: "生成次数：{n}",
      sourceGrounded: "LLM 撰写（引文从帖子原文复制）",
      sourceLlm: "LLM 撰写",
      sourceFallback: "LLM 的解释未通过检查，改为显示分类器归因：{reason}",
      model: "模型：{model}",
      evidenceMarkTitle: "证据：{tasks}",
      pathwayHeading: "认知路径",
      pathwaySentencesHeading: "逐句",
      pathwayAbsent: "未见",
      pathwaySentenceRef: "第 {list} 句",
      pathwaySentenceLabel: "第 {n} 句",
      pathwayNoPart: "未识别出认知路径的部分",
      yes: "是",
      no: "否",
    },
    en: {
      pageTitle: "MentalGLM mental-health analysis",
      skipToContent: "Skip to main content",
      title: "MentalGLM: mental-health analysis of Chinese social-media posts",
      subtitle: "Explainable analysis of emotion, cognitive distortions and suicide risk",
      switchLang: "中文",
      switchLangLabel: "切换到中文界面",
      bannerTitle: "Decision support, not a diagnosis",
      bannerText: "Results are produced by models, can be wrong and must be reviewed by a qualified person. If someone is in danger, call the psychological assistance hotline 12356 (China); in an emergency 120 or 110.",
      inputLegend: "Posts",
      sourceLabel: "Input",
      sourcePaste: "Paste text",
      sourceFile: "Upload a file",
      textLabel: "Post text",
      textHint: "Paste one post; with “One post per line” each line is a separate post (blank lines are skipped).",
      perLine: "One post per line",
      fileLabel: "Choose a TXT, CSV or JSONL file",
      fileHint: "TXT: one post per line; CSV: a header row with a text column named text, content or post; JSONL: one JSON object with a text field per line. The file is read in your browser only and must be UTF-8.",
      tasksLegend: "Tasks",
      tasksLoading: "Loading the tasks…",
      tasksFailed: "Could not load the tasks ({error}). The server's default tasks will be used.",
      tasksNone: "The server lists no tasks; its default tasks will be used.",
      explain: "With explanation (written by a language model, slower)",
      apiKeySummary: "API key (optional)",
      apiKeyLabel: "API key",
      apiKeyHint: "Only needed when the service requires a key; kept in this page's memory only.",
      run: "Analyse",
      cancel: "Cancel",
      resultsHeading: "Results",
      downloadLabel: "Download the results (without the post text):",
      privacyNote: "The post text stays in this page's memory, to highlight the evidence; downloaded results do not contain it (explanations and evidence may quote fragments of it).",
      fileLoaded: "Read “{name}”: {posts} posts{errors}{blank}.",
      fileLoadedErrors: ", {n} bad rows (shown in the results)",
      fileLoadedBlank: ", {n} blank lines skipped",
      fileErrUnknownType: "Unsupported file type “{name}”: upload a .txt, .csv or .jsonl file.",
      fileErrTooLarge: "The file is too large ({size} MB): the page reads at most {max} MB; split it or use mentalglm analyze --input.",
      fileErrEncoding: "The file is not valid UTF-8 text: convert it first (e.g. iconv -f GBK -t UTF-8 in.csv > out.csv).",
      fileErrBinary: "This looks like a binary file (NUL bytes), not a text file of posts.",
      fileErrEmpty: "The file is empty: there are no posts to analyse.",
      fileErrCsvNoColumn: "The CSV file has no text column: the header needs one of text, content or post (columns: {columns}).",
      fileErrCsvQuote: "The CSV file has an unclosed quote on line {line}.",
      fileErrJsonlNoText: "No line of the JSONL file is a JSON object with a string text field (first problem: {first}).",
      fileErrRead: "Could not read the file: {error}",
      rowErrFields: "row has {n} fields, the header has {m}",
      rowErrJson: "not valid JSON ({error})",
      rowErrNotObject: "expected a JSON object per line",
      rowErrNoText: "no string text field (keys: {keys})",
      rowErrEmpty: "empty post",
      noFile: "Choose a file first.",
      errNoPosts: "There are no posts to analyse: paste text or upload a file.",
      errNoTasks: "Choose at least one task.",
      errUnauthorized: "The service needs a valid API key (HTTP {status}): enter it under “API key”.",
      errHttp: "The service returned an error (HTTP {status}): {detail}",
      errNetwork: "Could not reach the service: {error}",
      errMismatch: "The service returned {got} results for {sent} posts.",
      running: "Analysing… {done} / {total} done",
      cancelled: "Cancelled: showing the {done} / {total} posts done.",
      done: "Done: {total} posts.",
      summary: "{total} posts: {ok} analysed, {errors} errors, {high} high risk.",
      meta: "Engine: {engine}; model: {model}",
      noLlm: "no language model",
      postHeading: "Post {id}",
      chars: "{n} characters",
      outOfDomain: "Not Chinese text (analysed; results may be unreliable)",
      outsideTrainingDomain: "Unlike this model's training posts (similarity {similarity}): the result may be unreliable; read the post",
      piiScrubbed: "Personal data scrubbed: {items}",
      postTextCaption: "Post text (shown on this page only; highlights are the evidence the explanations quote)",
      crisisHeading: "High suicide risk",
      crisisFallback: "This post shows signs of high suicide risk. If you or someone near you is in danger, get help now:",
      crisisFallback12356: "China psychological assistance hotline",
      crisisFallback120: "Emergency medical service (China)",
      crisisFallback110: "Police (China)",
      errorBadge: "Error",
      errorLine: "Line {line}: {error}",
      errorNoLine: "{error}",
      engine: "Engine: {engine}",
      invalid: "INVALID: the model's answer named no readable label",
      noLabels: "No label decided",
      nothingEvident: "Nothing evident",
      supportHeading: "Support",
      confidenceLabel: "Confidence of {label}",
      noConfidence: "no confidence",
      allConfidences: "Probabilities of all labels",
      explanationHeading: "Explanation",
      evidenceHeading: "Evidence (highlighted in the post)",
      evidenceItem: "characters {start}–{end}",
      evidenceSupports: "supports “{label}”",
      evidenceWeight: "without it, the probability of “{label}” falls by {drop} points",
      noExplanation: "No explanation.",
      explanationError: "No explanation: {error}",
      taskError: "Error: {error}",
      verifierAgrees: "verifier agrees",
      verifierDisagrees: "verifier disagrees",
      qcPassed: "quality checks passed",
      qcFailed: "quality checks failed: {reasons}",
      sourceGrounded: "written by the LLM (quote copied from the post)",
      sourceLlm: "written by the LLM",
      sourceFallback: "the LLM's explanation failed its checks; the classifier's attribution is shown: {reason}",
      attempts: "attempts: {n}",
      model: "model: {model}",
      evidenceMarkTitle: "Evidence: {tasks}",
      pathwayHeading: "Cognitive pathway",
      pathwaySentencesHeading: "Sentence by sentence",
      pathwayAbsent: "not seen",
      pathwaySentenceRef: "sentence {list}",
      pathwaySentenceLabel: "Sentence {n}",
      pathwayNoPart: "no part of the pathway recognised",
      yes: "yes",
      no: "no",
    },
  };

  const LOCALES = ["zh-CN", "en"];
  const TEXT_COLUMNS = ["text", "content", "post", "文本", "内容", "微博内容", "微博正文"];
  const ID_COLUMNS = ["id", "post_id", "ID"];
  const TEXT_KEYS = ["text", "content", "post", "raw_text", "original_text"];
  const BATCH_SIZE = 16;
  const MAX_FILE_MB = 20;
  const CRISIS_FALLBACK = [["crisisFallback12356", "12356"], ["crisisFallback120", "120"], ["crisisFallback110", "110"]];

  const state = {
    locale: "zh-CN",
    catalog: [], // [{id, name_zh, name_en, labels: [{id, name_zh, name_en}]}]
    file: null, // {name, items} once a file has been read
    entries: [], // [{result, text}] in input order; text is null for rows that never reached the server
    meta: null,
    controller: null,
    apiKey: "",
  };

  const $ = (id) => document.getElementById(id);

  // --- strings ------------------------------------------------------------------------------

  /* A message is a key and its parameters, kept as such so that a language switch can re-render it. */
  function msg(key, params) {
    return { key, params: params || {} };
  }

  function t(key, params) {
    const table = I18N[state.locale] || I18N["zh-CN"];
    let text = key in table ? table[key] : I18N["zh-CN"][key];
    if (text === undefined) return key;
    for (const [name, value] of Object.entries(params || {})) {
      const shown = value && typeof value === "object" && "key" in value ? t(value.key, value.params) : String(value);
      text = text.split("{" + name + "}").join(shown);
    }
    return text;
  }

  class UiError extends Error {
    constructor(key, params) {
      super(t(key, params));
      this.ui = msg(key, params);
    }
  }

  const shown = {}; // element id -> [message, isError] on screen, re-rendered on a language switch

  function show(id, message, isError) {
    const node = $(id);
    shown[id] = message ? [message, Boolean(isError)] : null;
    node.textContent = message ? t(message.key, message.params) : "";
    if (id === "form-error") node.hidden = !message;
    if (id === "file-status") {
      node.classList.toggle("error", Boolean(isError));
      node.setAttribute("role", isError ? "alert" : "status");
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function applyI18n() {
    document.documentElement.lang = state.locale;
    document.title = t("pageTitle");
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    const toggle = $("lang-toggle");
    toggle.textContent = t("switchLang");
    toggle.setAttribute("aria-label", t("switchLangLabel"));
    toggle.lang = state.locale === "en" ? "zh-CN" : "en";
    renderTaskOptions();
    for (const [id, value] of Object.entries(shown)) if (value) show(id, value[0], value[1]);
    if (state.entries.length) renderResults();
  }

  function setLocale(locale) {
    state.locale = LOCALES.includes(locale) ? locale : "zh-CN";
    try {
      localStorage.setItem("mentalglm.locale", state.locale);
    } catch (_) {
      /* storage may be disabled; the switch still works for this page */
    }
    applyI18n();
  }

  // --- tasks --------------------------------------------------------------------------------

  function labelEntry(l) {
    if (typeof l === "string") return { id: l, name_zh: l, name_en: l };
    return { id: String(l.id), name_zh: l.name_zh || l.zh || String(l.id), name_en: l.name_en || l.en || String(l.id) };
  }

  function normaliseTasks(payload) {
    let list = Array.isArray(payload) ? payload : payload && payload.tasks;
    if (list && !Array.isArray(list) && typeof list === "object") {
      list = Object.entries(list).map(([id, value]) => Object.assign({ id }, value));
    }
    const defaults = (payload && !Array.isArray(payload) && (payload.default_tasks || payload.defaults)) || null;
    const tasks = (list || [])
      .filter((task) => task && typeof task.id === "string")
      .map((task) => ({
        id: task.id,
        name_zh: task.name_zh || task.zh || task.id,
        name_en: task.name_en || task.en || task.id,
        isDefault: task.default === true || (Array.isArray(defaults) && defaults.includes(task.id)),
        labels: (task.labels || []).map(labelEntry),
      }));
    if (!tasks.some((task) => task.isDefault)) {
      for (const task of tasks) task.isDefault = true; // a request without tasks gets all the server's tasks
    }
    return tasks;
  }

  function renderTaskOptions() {
    const box = $("task-options");
    const checked = new Set(selectedTasks() || []);
    const first = box.childElementCount === 0;
    box.replaceChildren();
    for (const task of state.catalog) {
      const id = "task-" + task.id;
      const input = el("input", { type: "checkbox", id, name: "tasks", value: task.id });
      input.checked = first ? task.isDefault : checked.has(task.id);
      const name = state.locale === "en" ? task.name_en : task.name_zh;
      box.append(el("label", { className: "inline task-option", for: id }, input, el("span", { text: name }),
        el("code", { className: "task-id", text: task.id })));
    }
  }

  function selectedTasks() {
    const inputs = $("task-options").querySelectorAll("input[name=tasks]");
    if (!inputs.length) return null;
    return Array.from(inputs).filter((input) => input.checked).map((input) => input.value);
  }

  async function loadTasks() {
    show("tasks-status", msg("tasksLoading"));
    try {
      let response;
      try {
        response = await fetch("v1/tasks", { headers: authHeaders({ Accept: "application/json" }) });
      } catch (error) {
        throw new UiError("errNetwork", { error: error.message });
      }
      if (!response.ok) throw await httpError(response);
      state.catalog = normaliseTasks(await response.json());
      $("task-options").replaceChildren();
      renderTaskOptions();
      show("tasks-status", state.catalog.length ? null : msg("tasksNone"));
    } catch (error) {
      show("tasks-status", msg("tasksFailed", { error: error.ui || error.message }));
    }
  }

  function taskName(taskId, result) {
    const task = state.catalog.find((item) => item.id === taskId);
    if (state.locale === "en") return (task && task.name_en) || taskId;
    return (result && result.task_name_zh) || (task && task.name_zh) || taskId;
  }

  function labelName(taskId, labelId, score) {
    if (score) return state.locale === "en" ? score.name_en || score.id : score.name_zh || score.id;
    const task = state.catalog.find((item) => item.id === taskId);
    const label = task && task.labels.find((item) => item.id === labelId);
    if (!label) return labelId;
    return state.locale === "en" ? label.name_en : label.name_zh;
  }

  // --- reading input ------------------------------------------------------------------------

  function localError(id, line, message) {
    return { status: "error", schema_version: 1, id, line, error: message };
  }

  function pastedItems() {
    const raw = $("posts-text").value;
    if ($("per-line").checked) {
      const items = [];
      raw.split(/\r\n|\r|\n/).forEach((line, index) => {
        if (line.trim()) items.push({ id: "post-" + (items.length + 1), text: line, line: index + 1 });
      });
      return items;
    }
    return raw.trim() ? [{ id: "post-1", text: raw, line: null }] : [];
  }

  class FileError extends UiError {}

  function decodeFile(buffer) {
    const bytes = new Uint8Array(buffer);
    if (bytes.subarray(0, 8192).includes(0)) throw new FileError("fileErrBinary");
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes); // drops a leading BOM
    } catch (_) {
      throw new FileError("fileErrEncoding");
    }
  }

  function splitLines(text) {
    const lines = text.split(/\r\n|\r|\n/);
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    return lines;
  }

  function pick(names, candidates) {
    return candidates.find((name) => names.includes(name)) || null;
  }

  function parseTxt(text, name) {
    const items = [];
    let blank = 0;
    splitLines(text).forEach((line, index) => {
      if (line.trim()) items.push({ id: name + ":" + (index + 1), text: line, line: index + 1 });
      else blank += 1;
    });
    return { items, blank };
  }

  /* RFC 4180 records with the line each starts on; quotes may hold commas and newlines. */
  function csvRecords(text) {
    const records = [];
    let field = "";
    let fields = [];
    let quoted = false;
    let line = 1;
    let start = 1;
    let quoteLine = 1;
    const endRecord = () => {
      fields.push(field);
      records.push({ fields, line: start });
      fields = [];
      field = "";
    };
    for (let i = 0; i < text.length; i += 1) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 1;
          } else quoted = false;
        } else {
          if (c === "\n" || (c === "\r" && text[i + 1] !== "\n")) line += 1;
          field += c;
        }
      } else if (c === '"' && field === "") {
        quoted = true;
        quoteLine = line;
      } else if (c === ",") {
        fields.push(field);
        field = "";
      } else if (c === "\r" || c === "\n") {
        if (c === "\r" && text[i + 1] === "\n") i += 1;
        endRecord();
        line += 1;
        start = line;
      } else field += c;
    }
    if (quoted) throw new FileError("fileErrCsvQuote", { line: quoteLine });
    if (field !== "" || fields.length) endRecord();
    return records;
  }

  function parseCsv(text, name) {
    const records = csvRecords(text);
    const isBlank = (record) => record.fields.length === 1 && record.fields[0].trim() === "";
    const headerIndex = records.findIndex((record) => !isBlank(record));
    if (headerIndex < 0) throw new FileError("fileErrEmpty");
    const header = records[headerIndex].fields.map((name) => name.trim());
    const column = pick(header, TEXT_COLUMNS);
    if (!column) throw new FileError("fileErrCsvNoColumn", { columns: header.join(", ") || "—" });
    const textAt = header.indexOf(column);
    const idName = pick(header, ID_COLUMNS);
    const idAt = idName ? header.indexOf(idName) : -1;
    const items = [];
    let blank = 0;
    for (const record of records.slice(headerIndex + 1)) {
      if (isBlank(record)) {
        blank += 1;
        continue;
      }
      const id = (idAt >= 0 && record.fields[idAt]) || name + ":" + record.line;
      if (record.fields.length !== header.length) {
        items.push({ error: localError(id, record.line, t("rowErrFields", { n: record.fields.length, m: header.length })) });
      } else items.push({ id, text: record.fields[textAt], line: record.line });
    }
    return { items, blank };
  }

  function parseJsonl(text, name) {
    const items = [];
    let blank = 0;
    splitLines(text).forEach((line, index) => {
      const number = index + 1;
      const fallbackId = name + ":" + number;
      if (!line.trim()) {
        blank += 1;
        return;
      }
      let record;
      try {
        record = JSON.parse(line);
      } catch (error) {
        items.push({ error: localError(fallbackId, number, t("rowErrJson", { error: error.message })) });
        return;
      }
      if (!record || typeof record !== "object" || Array.isArray(record)) {
        items.push({ error: localError(fallbackId, number, t("rowErrNotObject")) });
        return;
      }
      const keys = Object.keys(record);
      const idName = pick(keys, ID_COLUMNS);
      const id = idName && record[idName] !== null && record[idName] !== "" ? String(record[idName]) : fallbackId;
      const column = pick(keys, TEXT_COLUMNS);
      if (!column || typeof record[column] !== "string") {
        items.push({ error: localError(id, number, t("rowErrNoText", { keys: keys.join(", ") || "—" })) });
        return;
      }
      items.push({ id, text: record[column], line: number });
    });
    if (items.length && !items.some((item) => !item.error)) {
      throw new FileError("fileErrJsonlNoText", { first: items[0].error.error });
    }
    return { items, blank };
  }

  async function readFile(file) {
    const lower = file.name.toLowerCase();
    const kind = [".txt", ".csv", ".jsonl"].find((suffix) => lower.endsWith(suffix));
    if (!kind) throw new FileError("fileErrUnknownType", { name: file.name });
    if (file.size > MAX_FILE_MB * 1024 * 1024) {
      throw new FileError("fileErrTooLarge", { size: (file.size / 1048576).toFixed(1), max: MAX_FILE_MB });
    }
    let buffer;
    try {
      buffer = await file.arrayBuffer();
    } catch (error) {
      throw new FileError("fileErrRead", { error: error.message });
    }
    const text = decodeFile(buffer);
    if (!text.trim()) throw new FileError("fileErrEmpty");
    const parse = kind === ".txt" ? parseTxt : kind === ".csv" ? parseCsv : parseJsonl;
    const parsed = parse(text, file.name);
    for (const item of parsed.items) {
      if (!item.error && !item.text.trim()) item.error = localError(item.id, item.line, t("rowErrEmpty"));
    }
    if (!parsed.items.length) throw new FileError("fileErrEmpty");
    return { name: file.name, items: parsed.items, blank: parsed.blank };
  }

  function fileSummary(file) {
    const errors = file.items.filter((item) => item.error).length;
    return msg("fileLoaded", {
      name: file.name,
      posts: file.items.length - errors,
      errors: errors ? msg("fileLoadedErrors", { n: errors }) : "",
      blank: file.blank ? msg("fileLoadedBlank", { n: file.blank }) : "",
    });
  }

  async function onFileChosen() {
    const input = $("file-input");
    state.file = null;
    show("form-error", null);
    if (!input.files || !input.files.length) {
      show("file-status", null);
      return;
    }
    $("source-file").checked = true;
    showSource();
    try {
      state.file = await readFile(input.files[0]);
      show("file-status", fileSummary(state.file));
    } catch (error) {
      if (!(error instanceof FileError)) console.error(error);
      show("file-status", error.ui || msg("fileErrRead", { error: error.message }), true);
    }
  }

  function showSource() {
    const file = $("source-file").checked;
    $("paste-area").hidden = file;
    $("file-area").hidden = !file;
  }

  // --- calling the service --------------------------------------------------------------------

  function authHeaders(headers) {
    if (state.apiKey) headers.Authorization = "Bearer " + state.apiKey;
    return headers;
  }

  async function httpError(response) {
    if (response.status === 401 || response.status === 403) return new UiError("errUnauthorized", { status: response.status });
    let detail = response.statusText || "";
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) {
        detail = body.detail.map((d) => [(d.loc || []).join("."), d.msg].filter(Boolean).join(": ")).join("; ");
      } else if (body.error) detail = typeof body.error === "string" ? body.error : JSON.stringify(body.error);
    } catch (_) {
      /* not JSON: keep the status text */
    }
    return new UiError("errHttp", { status: response.status, detail });
  }

  async function analyseBatch(posts, options, signal) {
    const body = { posts: posts.map((p) => ({ id: p.id, text: p.text })), explain: options.explain, locale: state.locale };
    if (options.tasks) body.tasks = options.tasks;
    let response;
    try {
      response = await fetch("v1/analyze", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "application/json" }),
        body: JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new UiError("errNetwork", { error: error.message });
    }
    if (!response.ok) throw await httpError(response);
    const payload = await response.json();
    const results = Array.isArray(payload.results) ? payload.results : [];
    if (results.length !== posts.length) throw new UiError("errMismatch", { got: results.length, sent: posts.length });
    return { results, model: payload.model, engine: payload.engine };
  }

  function setBusy(busy) {
    $("run").disabled = busy;
    $("cancel").hidden = !busy;
    $("analyze-form").setAttribute("aria-busy", busy ? "true" : "false");
  }

  async function onSubmit(event) {
    event.preventDefault();
    show("form-error", null);
    let items;
    if ($("source-file").checked) {
      if (!state.file) {
        const fileError = shown["file-status"] && shown["file-status"][1] ? shown["file-status"][0] : null;
        show("form-error", fileError || msg("noFile"));
        return;
      }
      items = state.file.items;
    } else items = pastedItems();
    if (!items.some((item) => !item.error)) {
      show("form-error", msg("errNoPosts"));
      return;
    }
    const tasks = selectedTasks();
    if (tasks && !tasks.length) {
      show("form-error", msg("errNoTasks"));
      return;
    }
    const options = { tasks, explain: $("explain").checked };
    state.entries = items.map((item) => (item.error ? { result: item.error, text: null } : { result: null, text: item.text }));
    state.meta = null;
    const pending = items.map((item, index) => ({ item, index })).filter(({ item }) => !item.error);
    const total = items.length;
    state.controller = new AbortController();
    setBusy(true);
    startResults();
    let done = total - pending.length;
    show("status", msg("running", { done, total }));
    try {
      for (let i = 0; i < pending.length; i += BATCH_SIZE) {
        const batch = pending.slice(i, i + BATCH_SIZE);
        const reply = await analyseBatch(batch.map(({ item }) => item), options, state.controller.signal);
        state.meta = { model: reply.model, engine: reply.engine };
        batch.forEach(({ index }, k) => {
          state.entries[index].result = reply.results[k];
        });
        done += batch.length;
        show("status", msg("running", { done, total }));
        appendReadyCards();
      }
      show("status", msg("done", { total }));
    } catch (error) {
      if (error.name === "AbortError") show("status", msg("cancelled", { done, total }));
      else {
        if (!error.ui) console.error(error);
        show("status", null);
        show("form-error", error.ui || msg("errNetwork", { error: error.message }));
      }
    } finally {
      state.entries = state.entries.filter((entry) => entry.result);
      setBusy(false);
      state.controller = null;
      renderResults();
      if (state.entries.length) $("results-heading").focus();
    }
  }

  // --- results --------------------------------------------------------------------------------

  function startResults() {
    $("result-list").replaceChildren();
    $("results").hidden = false;
    renderSummary();
  }

  function appendReadyCards() {
    const list = $("result-list");
    let i = list.childElementCount;
    while (i < state.entries.length && state.entries[i].result) {
      list.append(renderEntry(state.entries[i], i));
      i += 1;
    }
    renderSummary();
  }

  function renderResults() {
    const done = state.entries.filter((entry) => entry.result);
    $("results").hidden = done.length === 0;
    $("result-list").replaceChildren(...done.map((entry, i) => renderEntry(entry, i)));
    renderSummary();
  }

  function renderSummary() {
    const results = state.entries.map((entry) => entry.result).filter(Boolean);
    const errors = results.filter((r) => r.status === "error").length;
    const high = results.filter((r) => r.status !== "error" && r.high_risk).length;
    $("results-summary").textContent = t("summary", { total: results.length, ok: results.length - errors, errors, high });
    const meta = state.meta;
    $("results-meta").textContent = meta
      ? t("meta", { engine: meta.engine || "—", model: describeModel(meta.model) })
      : "";
    const empty = results.length === 0;
    $("download-jsonl").disabled = empty;
    $("download-csv").disabled = empty;
  }

  function describeModel(model) {
    if (model === null || model === undefined) return "—";
    if (typeof model !== "object") return String(model);
    if ("llm" in model || "version" in model) {
      return [model.llm || t("noLlm"), model.version ? "mentalglm " + model.version : ""].filter(Boolean).join(" · ");
    }
    return Object.entries(model)
      .filter(([, value]) => value !== null && value !== undefined && typeof value !== "object")
      .map(([key, value]) => key + "=" + value)
      .join(", ") || "—";
  }

  function renderEntry(entry, index) {
    const result = entry.result;
    const headingId = "post-heading-" + index;
    const card = el("li", { className: "card" + (result.status === "error" ? " card-error" : result.high_risk ? " card-high" : "") });
    const article = el("article", { "aria-labelledby": headingId });
    card.append(article);
    const head = el("header", { className: "card-head" }, el("h3", { id: headingId, text: t("postHeading", { id: result.id }) }));
    article.append(head);
    if (result.status === "error") {
      head.append(el("span", { className: "badge badge-error", text: t("errorBadge") }));
      const message = result.line ? t("errorLine", { line: result.line, error: result.error }) : t("errorNoLine", { error: result.error });
      article.append(el("p", { className: "error-text", text: message }));
      return card;
    }
    const badges = el("p", { className: "badges" }, el("span", { className: "badge", text: t("chars", { n: result.text_length }) }));
    if (result.out_of_domain) badges.append(el("span", { className: "badge badge-warn ood", text: t("outOfDomain") }));
    const pii = Object.entries(result.pii_scrubbed || {}).filter(([, n]) => n > 0);
    if (pii.length) badges.append(el("span", { className: "badge", text: t("piiScrubbed", { items: pii.map(([k, n]) => k + "×" + n).join(", ") }) }));
    head.append(badges);

    if (result.high_risk) article.append(renderCrisis(result));
    else {
      const support = (result.notices || []).find((n) => n.kind === "support");
      if (support) article.append(renderSupport(support));
    }

    const taskIds = Object.keys(result.tasks || {});
    if (entry.text !== null) article.append(renderPostText(entry.text, result, taskIds));

    const tasks = el("div", { className: "tasks-grid" });
    taskIds.forEach((taskId, k) => tasks.append(renderTask(taskId, result.tasks[taskId], k, entry.text)));
    article.append(tasks);

    const nad = (result.notices || []).filter((n) => n.kind === "not_a_diagnosis");
    const nadText = nad.length ? nad.map((n) => n.text).join(" ") : t("bannerTitle");
    article.append(el("p", { className: "notice-nad", role: "note", text: nadText }));
    return card;
  }

  function resourceList(resources, className) {
    const list = el("ul", { className });
    for (const resource of resources) {
      const phone = String(resource.contact || "").replace(/[^0-9+]/g, "");
      const contact = phone
        ? el("a", { href: "tel:" + phone, className: "crisis-contact", text: resource.contact })
        : el("span", { className: "crisis-contact", text: resource.contact });
      list.append(el("li", null, el("span", { className: "crisis-name", text: resource.name }), " ", contact,
        resource.note ? el("span", { className: "crisis-note", text: state.locale === "en" ? " (" + resource.note + ")" : "（" + resource.note + "）" }) : null));
    }
    return list;
  }

  function renderSupport(notice) {
    return el("section", { className: "support", role: "note", "aria-label": t("supportHeading") },
      el("h4", { text: t("supportHeading") }), el("p", { text: notice.text }),
      resourceList(notice.resources || [], "crisis-resources"));
  }

  function renderCrisis(result) {
    const notice = (result.notices || []).find((n) => n.kind === "crisis");
    const text = notice ? notice.text : t("crisisFallback");
    const resources = notice && notice.resources && notice.resources.length
      ? notice.resources
      : CRISIS_FALLBACK.map(([key, contact]) => ({ name: t(key), contact, note: "" }));
    return el("section", { className: "crisis", role: "alert", "aria-label": t("crisisHeading") },
      el("h4", { text: "⚠ " + t("crisisHeading") }), el("p", { text }), resourceList(resources, "crisis-resources"));
  }

  /* Offsets in the results are Python character offsets (code points); JS strings count UTF-16 units. */
  function renderPostText(text, result, taskIds) {
    const chars = Array.from(text);
    const spans = [];
    taskIds.forEach((taskId, k) => {
      for (const span of (result.tasks[taskId].evidence || [])) {
        const start = Math.max(0, Math.min(chars.length, Number(span.start)));
        const end = Math.max(0, Math.min(chars.length, Number(span.end)));
        if (Number.isFinite(start) && Number.isFinite(end) && start < end) spans.push({ start, end, task: taskId, k });
      }
    });
    const cuts = new Set([0, chars.length]);
    for (const span of spans) {
      cuts.add(span.start);
      cuts.add(span.end);
    }
    const points = Array.from(cuts).sort((a, b) => a - b);
    const body = el("blockquote", { className: "post-text", lang: "zh-CN" });
    for (let i = 0; i + 1 < points.length; i += 1) {
      const [from, to] = [points[i], points[i + 1]];
      const piece = chars.slice(from, to).join("");
      const covering = spans.filter((span) => span.start <= from && span.end >= to);
      if (!covering.length) {
        body.append(document.createTextNode(piece));
        continue;
      }
      const names = Array.from(new Set(covering.map((span) => taskName(span.task, result.tasks[span.task]))));
      body.append(el("mark", {
        className: "evidence evidence-" + (covering[0].k % 4) + (covering.length > 1 ? " evidence-multi" : ""),
        "data-tasks": Array.from(new Set(covering.map((span) => span.task))).join(" "),
        "data-start": from,
        "data-end": to,
        title: t("evidenceMarkTitle", { tasks: names.join("、") }),
        text: piece,
      }));
    }
    return el("figure", { className: "post" }, el("figcaption", { text: t("postTextCaption") }), body);
  }

  function percent(value) {
    return Math.round(Math.max(0, Math.min(1, Number(value))) * 1000) / 10;
  }

  function confidenceBar(label, value) {
    if (value === null || value === undefined || !Number.isFinite(Number(value))) {
      return el("span", { className: "no-confidence", text: t("noConfidence") });
    }
    const pct = percent(value);
    const fill = el("span", { className: "bar-fill" });
    fill.style.width = pct + "%";
    return el("span", { className: "bar-wrap" },
      el("span", {
        className: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct,
        "aria-valuetext": pct + "%", "aria-label": t("confidenceLabel", { label }),
      }, fill),
      el("span", { className: "bar-value", text: pct.toFixed(1) + "%" }));
  }

  /* cognitive_pathway: the four steps in order with the sentences that show each, then every sentence (sliced
   * from the post kept in this page by its code-point offsets) with its parts and their probabilities. */
  function renderPathway(task, text) {
    const chars = text === null || text === undefined ? null : Array.from(text);
    const partName = (stage) => (state.locale === "en" ? stage.part_en : stage.part_zh);
    const chain = el("ol", { className: "pathway-chain" });
    for (const stage of task.pathway || []) {
      const seen = (stage.sentences || []).length > 0;
      const name = partName(stage) + ((stage.children || []).length ? " · " + stage.children.join("、") : "");
      const where = seen ? t("pathwaySentenceRef", { list: stage.sentences.join("、") }) : t("pathwayAbsent");
      chain.append(el("li", { className: "pathway-stage" + (seen ? "" : " stage-absent"), "data-part": stage.part },
        el("span", { className: "stage-name", text: name }), " ", el("span", { className: "stage-where", text: where })));
    }
    const list = el("ol", { className: "pathway-sentences" });
    for (const sentence of task.sentences || []) {
      const quote = chars ? chars.slice(sentence.start, sentence.end).join("") : "[" + sentence.start + "–" + sentence.end + ")";
      const parts = el("span", { className: "pathway-parts" });
      const shown = (sentence.parts || []).filter((p) => p.child || !(sentence.parts || []).some((q) => q.child && q.part === p.part));
      for (const part of shown) {
        const name = (state.locale === "en" ? part.part_en : part.part) + (part.child ? " · " + part.child : "");
        parts.append(el("span", { className: "pathway-part", "data-label": part.id, text: name + " " + percent(part.confidence).toFixed(1) + "%" }));
      }
      if (!shown.length) parts.append(el("span", { className: "pathway-part none", text: t("pathwayNoPart") }));
      list.append(el("li", { className: "pathway-sentence", "data-start": sentence.start, "data-end": sentence.end,
        "aria-label": t("pathwaySentenceLabel", { n: sentence.index }) },
        el("q", { className: "sentence-text", lang: "zh-CN", text: quote }), " ", parts));
    }
    return el("div", { className: "pathway" }, el("h5", { text: t("pathwayHeading") }), chain,
      el("h5", { text: t("pathwaySentencesHeading") }), list);
  }

  function renderTask(taskId, task, k, text) {
    const section = el("section", { className: "task task-" + (k % 4), "data-task": taskId });
    section.append(el("h4", null, el("span", { className: "swatch swatch-" + (k % 4), "aria-hidden": "true" }),
      taskName(taskId, task)));
    const info = el("p", { className: "badges" }, el("span", { className: "badge", text: t("engine", { engine: task.engine }) }));
    if (task.valid === false) info.append(el("span", { className: "badge badge-error", text: t("invalid") }));
    if (task.outside_training_domain) {  // a warning only: the decision and any crisis notice stay as they are
      const similarity = typeof task.training_domain_similarity === "number" ? task.training_domain_similarity.toFixed(2) : "—";
      info.append(el("span", { className: "badge badge-warn outside-domain", text: t("outsideTrainingDomain", { similarity }) }));
    }
    section.append(info);

    const labels = el("ul", { className: "labels" });
    for (const score of task.labels || []) {
      const name = labelName(taskId, score.id, score);
      labels.append(el("li", { className: "label", "data-label": score.id },
        el("span", { className: "label-name", text: name }), confidenceBar(name, score.confidence)));
    }
    if (task.nothing_evident && !(task.labels || []).length) {  // a screened multi-label task found nothing
      const name = state.locale === "en" ? t("nothingEvident") : (task.nothing_evident_zh || t("nothingEvident"));
      labels.append(el("li", { className: "label nothing-evident", "data-label": "none" },
        el("span", { className: "label-name", text: name }), confidenceBar(name, (task.confidences || {}).none)));
    } else if (!(task.labels || []).length) labels.append(el("li", { className: "label none", text: t("noLabels") }));
    section.append(labels);
    if (Array.isArray(task.sentences)) section.append(renderPathway(task, text));

    // Nothing evident: no risk or distortion wording at all, not even the other labels' small probabilities
    // (they stay in the JSON and the downloads for researchers).
    const all = task.nothing_evident ? [] : Object.entries(task.confidences || {}).sort((a, b) => b[1] - a[1]);
    if (all.length) {
      const list = el("ul", { className: "labels all" });
      for (const [labelId, value] of all) {
        const name = labelName(taskId, labelId, null);
        list.append(el("li", { className: "label" }, el("span", { className: "label-name", text: name }), confidenceBar(name, value)));
      }
      section.append(el("details", { className: "all-confidences" }, el("summary", { text: t("allConfidences") }), list));
    }

    if (task.explanation) {
      section.append(el("h5", { text: t("explanationHeading") }), el("p", { className: "explanation", lang: "zh-CN", text: task.explanation }));
    } else if (task.error && task.valid !== false) {
      section.append(el("p", { className: "warn-text", text: t("explanationError", { error: task.error }) }));
    }
    if (task.error && task.valid === false) section.append(el("p", { className: "error-text", text: t("taskError", { error: task.error }) }));

    if ((task.evidence || []).length) {
      const list = el("ol", { className: "evidence-list" });
      for (const span of task.evidence) {
        const item = el("li", null, el("q", { className: "evidence-quote swatch-text-" + (k % 4), lang: "zh-CN", text: span.quote }), " ",
          el("span", { className: "evidence-where", text: t("evidenceItem", { start: span.start + 1, end: span.end }) }));
        if (span.label) {  // attribution: which decided label the clause supports, and by how much
          const label = labelName(taskId, span.label, null);
          const drop = typeof span.weight === "number" ? (span.weight * 100).toFixed(1) : null;
          item.append(" ", el("span", { className: "evidence-support", text: drop === null
            ? t("evidenceSupports", { label }) : t("evidenceWeight", { label, drop }) }));
        }
        list.append(item);
      }
      section.append(el("h5", { text: t("evidenceHeading") }), list);
    }

    const checks = el("p", { className: "badges checks" });
    if (task.explanation_source === "llm_grounded") checks.append(el("span", { className: "badge", text: t("sourceGrounded") }));
    if (task.explanation_source === "llm") checks.append(el("span", { className: "badge", text: t("sourceLlm") }));
    if (task.explanation_source === "attribution_fallback") {
      checks.append(el("span", { className: "badge badge-warn", text: t("sourceFallback", { reason: task.fallback_reason || "—" }) }));
    }
    if (task.verifier_agrees === true) checks.append(el("span", { className: "badge badge-ok", text: t("verifierAgrees") }));
    if (task.verifier_agrees === false) checks.append(el("span", { className: "badge badge-warn", text: t("verifierDisagrees") }));
    if (task.qc_passed === true) checks.append(el("span", { className: "badge badge-ok", text: t("qcPassed") }));
    if (task.qc_passed === false) {
      checks.append(el("span", { className: "badge badge-warn", text: t("qcFailed", { reasons: (task.qc_reasons || []).join("; ") || "—" }) }));
    }
    if (task.attempts) checks.append(el("span", { className: "badge", text: t("attempts", { n: task.attempts }) }));
    if (task.model) checks.append(el("span", { className: "badge", text: t("model", { model: task.model }) }));
    if (checks.childElementCount) section.append(checks);
    return section;
  }

  // --- downloads ----------------------------------------------------------------------------

  function exportable(result) {
    const copy = Object.assign({}, result);
    for (const key of TEXT_KEYS) delete copy[key];
    return copy;
  }

  function exportedResults() {
    return state.entries.map((entry) => entry.result).filter(Boolean).map(exportable);
  }

  const CSV_COLUMNS = [
    "id", "status", "line", "error", "text_length", "out_of_domain", "cjk_share", "high_risk", "task",
    "task_name_zh", "engine", "valid", "labels", "label_names_zh", "label_names_en", "label_confidences",
    "explanation", "explanation_source", "fallback_reason", "evidence", "verifier_agrees", "verifier_reader", "qc_passed",
    "qc_reasons",
    "attempts", "model", "task_error",
    "outside_training_domain", "training_domain_similarity", "pathway_sentences",
  ];

  function csvCell(value) {
    if (value === null || value === undefined) return "";
    let text = typeof value === "object" ? JSON.stringify(value) : String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text; // keep spreadsheets from running cells as formulas
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function csvRows(result) {
    if (result.status === "error") {
      return [{ id: result.id, status: "error", line: result.line, error: result.error }];
    }
    const base = {
      id: result.id, status: result.status, text_length: result.text_length, out_of_domain: result.out_of_domain,
      cjk_share: result.cjk_share, high_risk: result.high_risk,
    };
    const tasks = Object.entries(result.tasks || {});
    if (!tasks.length) return [base];
    return tasks.map(([taskId, task]) => Object.assign({}, base, {
      task: taskId,
      task_name_zh: task.task_name_zh,
      engine: task.engine,
      valid: task.valid,
      labels: (task.labels || []).map((l) => l.id).join(";"),
      label_names_zh: (task.labels || []).map((l) => l.name_zh).join(";"),
      label_names_en: (task.labels || []).map((l) => l.name_en).join(";"),
      label_confidences: (task.labels || []).map((l) => (l.confidence === null || l.confidence === undefined ? "" : l.confidence)).join(";"),
      explanation: task.explanation,
      explanation_source: task.explanation_source,
      fallback_reason: task.fallback_reason,
      evidence: (task.evidence || []).map((s) => s.start + "-" + s.end + ":" + s.quote).join(" | "),
      verifier_agrees: task.verifier_agrees,
      verifier_reader: task.verifier_reader,
      qc_passed: task.qc_passed,
      qc_reasons: (task.qc_reasons || []).join("; "),
      attempts: task.attempts,
      model: task.model,
      task_error: task.error,
      outside_training_domain: task.outside_training_domain,
      training_domain_similarity: task.training_domain_similarity,
      pathway_sentences: Array.isArray(task.sentences)
        ? task.sentences.map((s) => s.index + "[" + s.start + "-" + s.end + "]:" + (s.parts || []).map((p) => p.id).join(";")).join(" | ")
        : null,
    }));
  }

  function toCsv(results) {
    const lines = [CSV_COLUMNS.join(",")];
    for (const result of results) {
      for (const row of csvRows(result)) lines.push(CSV_COLUMNS.map((column) => csvCell(row[column])).join(","));
    }
    return "\ufeff" + lines.join("\r\n") + "\r\n"; // the BOM makes spreadsheet programs read UTF-8
  }

  function stamp() {
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    return now.getFullYear() + pad(now.getMonth() + 1) + pad(now.getDate()) + "-" + pad(now.getHours()) +
      pad(now.getMinutes()) + pad(now.getSeconds());
  }

  function download(content, type, extension) {
    const url = URL.createObjectURL(new Blob([content], { type }));
    const link = el("a", { href: url, download: "mentalglm-results-" + stamp() + extension, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function downloadJsonl() {
    const lines = exportedResults().map((r) => JSON.stringify(r));
    download(lines.join("\n") + "\n", "application/x-ndjson;charset=utf-8", ".jsonl");
  }

  function downloadCsv() {
    download(toCsv(exportedResults()), "text/csv;charset=utf-8", ".csv");
  }

  // --- start ----------------------------------------------------------------------------------

  function init() {
    let saved = null;
    try {
      saved = localStorage.getItem("mentalglm.locale");
    } catch (_) {
      saved = null;
    }
    const asked = new URLSearchParams(window.location.search).get("lang");
    state.locale = LOCALES.includes(asked) ? asked : LOCALES.includes(saved) ? saved : "zh-CN";
    applyI18n();
    $("lang-toggle").addEventListener("click", () => setLocale(state.locale === "en" ? "zh-CN" : "en"));
    for (const radio of document.querySelectorAll("input[name=source]")) radio.addEventListener("change", showSource);
    $("file-input").addEventListener("change", onFileChosen);
    $("analyze-form").addEventListener("submit", onSubmit);
    $("cancel").addEventListener("click", () => state.controller && state.controller.abort());
    $("download-jsonl").addEventListener("click", downloadJsonl);
    $("download-csv").addEventListener("click", downloadCsv);
    $("api-key").addEventListener("change", (event) => {
      state.apiKey = event.target.value.trim();
      loadTasks();
    });
    showSource();
    loadTasks();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
