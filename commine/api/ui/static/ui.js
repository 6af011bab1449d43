// commine's workspace: small progressive enhancements over server-rendered pages. No library.
"use strict";
(function () {
  const C = window.COMMINE;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  async function post(path, body) {
    const answer = await fetch(C.api + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Commine-UI": "1"},
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.message || answer.status);
    return data;
  }

  // "Model updated": poll the newest model version while a workspace page is open.
  function watchModel() {
    if (!C) return;
    setInterval(async () => {
      try {
        const answer = await fetch(C.api + "/model", {credentials: "same-origin"});
        const data = await answer.json();
        if (data.version && data.version > C.version) {
          const note = $("#model-updated");
          note.textContent = `Model updated: version ${data.version} is live (this page shows ${C.version ? "version " + C.version : "no model"}). Predictions refresh on the next message.`;
          note.hidden = false;
          note.dataset.version = data.version;
        }
      } catch (e) { /* offline for a moment: try again on the next tick */ }
    }, 2000);
  }

  // The message view: label picker over the hierarchy, keyboard shortcuts, each decision saved at once.
  function messageControls() {
    const msg = $("#message");
    const picker = $("#picker");
    if (!msg || !picker) return;
    const names = JSON.parse($("#label-names").textContent);
    const list = $("#picker-list");
    const explore = $("#explore");
    let matches = [];

    const assigned = () => $$("#assigned .chip").map((c) => c.dataset.label);
    const dismissedNow = () => $$(".chip.dismissed").map((c) => c.textContent.trim());

    function show() {
      const words = picker.value.toLowerCase().split(/\s*>\s*|\s+/).filter(Boolean);
      matches = words.length ? names.filter((n) => words.every((w) => n.toLowerCase().includes(w))).slice(0, 12) : [];
      list.innerHTML = "";
      matches.forEach((n, i) => {
        const li = document.createElement("li");
        li.textContent = n; li.setAttribute("role", "option");
        if (i === 0) li.setAttribute("aria-selected", "true");
        li.addEventListener("mousedown", (e) => { e.preventDefault(); apply([n]); });
        list.appendChild(li);
      });
    }

    async function save(labels, dismissed) {
      const sentiment = $("#sentiment") ? $("#sentiment").value : null;
      $("#saved").textContent = "saving…";
      try {
        const data = await post("/label", {uid: msg.dataset.uid, assigned: labels, dismissed: dismissed, sentiment: sentiment,
          queue: explore ? explore.dataset.queue : null});
        const got = ((data.labelling || [])[0] || {assigned: []}).assigned.map((a) => Array.isArray(a.name) ? a.name.join(" > ") : a.name);
        $("#assigned").innerHTML = "";
        got.forEach((n) => { const s = document.createElement("span"); s.className = "chip assigned"; s.dataset.label = n; s.textContent = n; $("#assigned").appendChild(s); });
        $("#saved").textContent = `saved (${got.length} label${got.length === 1 ? "" : "s"})`;
        msg.dataset.saved = "1";
      } catch (e) { $("#saved").textContent = "not saved: " + e.message; }
    }

    function apply(labels) {
      const now = assigned();
      labels.forEach((n) => { if (!now.includes(n)) now.push(n); });
      picker.value = ""; show(); picker.blur();
      return save(now, dismissedNow().filter((n) => !now.includes(n)));
    }

    function next() {
      if (!explore) return;
      const url = new URL(window.location.href);
      const skip = (explore.dataset.skip ? explore.dataset.skip.split(",") : []).concat([msg.dataset.uid]).slice(-50);
      url.searchParams.set("skip", skip.join(","));
      window.location.assign(url.toString());
    }

    picker.addEventListener("input", show);
    picker.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); if (matches.length) apply([matches[0]]); }
      if (e.key === "Escape") { picker.value = ""; show(); picker.blur(); }
    });
    $$("#predicted .chip").forEach((c) => c.addEventListener("click", () => apply([c.dataset.label])));
    $("#assigned").addEventListener("click", (e) => {
      if (!e.target.classList.contains("x")) return;
      const gone = e.target.parentElement.dataset.label;
      save(assigned().filter((n) => n !== gone), dismissedNow().concat([gone]));
    });
    document.addEventListener("keydown", (e) => {
      if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
      const chips = $$("#predicted .chip");
      if (e.key === "/") { e.preventDefault(); picker.focus(); }
      else if (/^[1-8]$/.test(e.key) && chips[+e.key - 1]) apply([chips[+e.key - 1].dataset.label]);
      else if (e.key === "d") { const now = assigned(); save(now, chips.map((c) => c.dataset.label).filter((n) => !now.includes(n))); }
      else if (e.key === "n" || e.key === "j") next();
    });
  }

  function discover() {
    $$(".cluster").forEach((section) => {
      const run = async (which) => {
        const label = $(".cluster-label", section).value.trim();
        const out = $(".result", section);
        if (!label || (which.uids && !which.uids.length)) { out.textContent = "choose a label (and messages)"; return; }
        try { const data = await post("/label-cluster", {...which, label: label}); out.textContent = `labelled ${data.labelled}`; }
        catch (e) { out.textContent = "not saved: " + e.message; }
      };
      const all = $(".label-all", section);
      if (!all) return;
      const generation = +$("#clusters").dataset.generation;
      all.addEventListener("click", () => run({cluster: +section.dataset.cluster, generation: generation}));
      $(".label-picked", section).addEventListener("click", () => run({uids: $$(".pick:checked", section).map((c) => c.value)}));
    });
  }

  function streamsEditor() {
    const form = $("#stream-form");
    if (!form) return;
    let timer = null;
    const chosen = () => {
      const out = {};
      $$(".threshold-row", form).forEach((row) => { if ($(".include", row).checked) out[row.dataset.label] = +$(".threshold", row).value; });
      return out;
    };
    async function preview(row) {
      const body = {model_version: +form.dataset.version, thresholds: chosen(), label: row ? row.dataset.label : null, stream: form.dataset.stream || null};
      try {
        const data = await post("/streams/preview", body);
        $("#preview-count").textContent = data.recent.entering;
        $("#preview-of").textContent = `of the newest ${data.recent.of} messages`;
        if (data.backlog) $("#preview-backlog").textContent = `· backlog ${data.backlog.backlog} → ${data.backlog.backlog_after}`;
        if (row && data.precision !== undefined) {
          $(".precision", row).textContent = data.precision === null ? "–" : data.precision.toFixed(2);
          $(".recall", row).textContent = data.recall === null ? "–" : data.recall.toFixed(2);
        }
      } catch (e) { $("#preview-count").textContent = "?"; $("#preview-of").textContent = e.message; }
    }
    const later = (row) => { clearTimeout(timer); timer = setTimeout(() => preview(row), 150); };
    $$(".threshold-row", form).forEach((row) => {
      const slider = $(".threshold", row);
      slider.addEventListener("input", () => { $("output", row).textContent = (+slider.value).toFixed(2); $(".include", row).checked = true; later(row); });
      $(".include", row).addEventListener("change", () => later(row));
      $$(".preset", row).forEach((b) => b.addEventListener("click", () => { slider.value = (+b.dataset.value).toFixed(2); slider.dispatchEvent(new Event("input")); }));
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = $("#stream-name").value.trim();
      try {
        await post("/streams", {name: name, title: form.elements.title.value, model_version: +form.dataset.version, thresholds: chosen()});
        $("#stream-result").textContent = "saved";
        window.location.assign(C.base + "/streams?stream=" + encodeURIComponent(name));
      } catch (err) { $("#stream-result").textContent = "not saved: " + err.message; }
    });
    preview(null);
  }

  function pinForm() {
    const form = $("#pin-form");
    if (!form) return;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try { await post("/pin", {stream: form.elements.stream.value, version: +form.elements.version.value}); $(".result", form).textContent = "pinned"; }
      catch (err) { $(".result", form).textContent = "not pinned: " + err.message; }
    });
  }

  watchModel(); messageControls(); discover(); streamsEditor(); pinForm();
})();
