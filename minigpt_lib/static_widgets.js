// Browser side of minigpt_lib/static_widgets.py: redraw a figure from the JSON embedded next to it whenever one of
// its controls moves. Plain DOM and SVG, no library, nothing fetched. Every output carries this script; the first
// copy defines window.minigptStatic and later copies reuse it.
window.minigptStatic = window.minigptStatic || (function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  // Ten stops of matplotlib's viridis colour map, the one the notebook's heatmaps use.
  var VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e",
                 "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];

  function svg(tag, attributes, parent) {
    var element = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (name) { element.setAttribute(name, attributes[name]); });
    if (parent) { parent.appendChild(element); }
    return element;
  }

  function text(content, attributes, parent) {
    var element = svg("text", attributes, parent);
    element.textContent = content;
    return element;
  }

  function viridis(value) {
    var position = Math.min(Math.max(value, 0), 1) * (VIRIDIS.length - 1);
    var i = Math.min(Math.floor(position), VIRIDIS.length - 2);
    var low = VIRIDIS[i], high = VIRIDIS[i + 1], f = position - i, rgb = [];
    for (var c = 1; c < 7; c += 2) {
      var a = parseInt(low.substr(c, 2), 16), b = parseInt(high.substr(c, 2), 16);
      rgb.push(Math.round(a + (b - a) * f));
    }
    return "rgb(" + rgb.join(",") + ")";
  }

  function visible(token) {  // show a token's leading space and line breaks
    return token.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5");
  }

  // ----- attention explorer: one head's (tokens, tokens) weights as a heatmap ---------------------------------
  function drawAttention(root, data, figure) {
    var sentence = data.sentences[+root.querySelector('[name="sentence"]').value];
    var layer = +root.querySelector('[name="layer"]').value, head = +root.querySelector('[name="head"]').value;
    var tokens = sentence.tokens, n = tokens.length, cell = Math.max(14, Math.min(34, Math.floor(420 / n)));
    var bytes = atob(sentence.weights), offset = ((layer * data.heads) + head) * n * n;
    var left = 120, top = 36, size = n * cell;
    var chart = svg("svg", {width: left + size + 90, height: top + size + 110, role: "img",
      "aria-label": "attention weights of layer " + layer + ", head " + head});
    text("Layer " + layer + ", head " + head, {x: left + size / 2, y: 20, "text-anchor": "middle",
      "font-weight": "bold", fill: "currentColor"}, chart);
    for (var q = 0; q < n; q++) {
      for (var k = 0; k < n; k++) {
        var weight = bytes.charCodeAt(offset + q * n + k) / 255;
        var rect = svg("rect", {x: left + k * cell, y: top + q * cell, width: cell, height: cell,
          fill: viridis(weight), "data-weight": weight.toFixed(3)}, chart);
        svg("title", {}, rect).textContent = visible(tokens[q]) + " \u2192 " + visible(tokens[k]) + ": " +
          weight.toFixed(2);
      }
      text(visible(tokens[q]), {x: left - 6, y: top + q * cell + cell * 0.65, "text-anchor": "end",
        "font-size": 12, fill: "currentColor"}, chart);
      var x = left + q * cell + cell / 2, y = top + size + 8;
      text(visible(tokens[q]), {x: x, y: y, "text-anchor": "end", "font-size": 12, fill: "currentColor",
        transform: "rotate(-60 " + x + " " + y + ")"}, chart);
    }
    text("query: token attending", {x: 12, y: top + size / 2, "text-anchor": "middle", "font-size": 12,
      fill: "currentColor", transform: "rotate(-90 12 " + (top + size / 2) + ")"}, chart);
    text("key: token attended to", {x: left + size / 2, y: top + size + 104, "text-anchor": "middle",
      "font-size": 12, fill: "currentColor"}, chart);
    colourScale(chart, left + size + 16, top, size);
    figure.replaceChildren(chart);
  }

  function colourScale(chart, x, y, height) {  // a vertical bar from weight 1 (top) to 0 (bottom)
    var steps = 20;
    for (var i = 0; i < steps; i++) {
      svg("rect", {x: x, y: y + i * height / steps, width: 12, height: height / steps + 0.5,
        fill: viridis(1 - i / (steps - 1))}, chart);
    }
    text("1", {x: x + 16, y: y + 9, "font-size": 11, fill: "currentColor"}, chart);
    text("0", {x: x + 16, y: y + height, "font-size": 11, fill: "currentColor"}, chart);
    text("weight", {x: x + 16, y: y + height / 2, "font-size": 11, fill: "currentColor"}, chart);
  }

  // ----- sampling playground: the next-token distribution after temperature, top-k and top-p -----------------
  // The same steps as minigpt_lib.generate.sample_next_token: greedy at temperature 0, otherwise divide by the
  // temperature, keep the top_k largest (0: all), keep the fewest tokens whose probability reaches top_p (1: all).
  function probabilities(logits, temperature, topK, topP) {
    var order = logits.map(function (_, i) { return i; }).sort(function (a, b) { return logits[b] - logits[a]; });
    var probs = logits.map(function () { return 0; });
    if (temperature === 0) {
      probs[order[0]] = 1;
      return probs;
    }
    var kept = topK > 0 ? order.slice(0, topK) : order.slice();
    var scaled = kept.map(function (i) { return logits[i] / temperature; });
    var softmax = function (values) {
      var top = Math.max.apply(null, values), exps = values.map(function (v) { return Math.exp(v - top); });
      var sum = exps.reduce(function (a, b) { return a + b; }, 0);
      return exps.map(function (e) { return e / sum; });
    };
    var p = softmax(scaled);
    if (topP < 1) {
      var before = 0, count = 0;
      while (count < p.length && before < topP) { before += p[count]; count += 1; }
      kept = kept.slice(0, count);
      p = softmax(scaled.slice(0, count));
    }
    kept.forEach(function (i, j) { probs[i] = p[j]; });
    return probs;
  }

  function drawSampling(root, data, figure) {
    var prompt = data.prompts[+root.querySelector('[name="prompt"]').value];
    var temperature = +root.querySelector('[name="temperature"]').value;
    var topK = +root.querySelector('[name="top-k"]').value, topP = +root.querySelector('[name="top-p"]').value;
    var probs = probabilities(prompt.logits, temperature, topK, topP);
    var kept = probs.filter(function (p) { return p > 0; }).length;
    var shown = probs.map(function (p, i) { return i; }).filter(function (i) { return probs[i] > 0; })
      .sort(function (a, b) { return probs[b] - probs[a]; }).slice(0, 12);
    var left = 140, width = 360, row = 22, top = 30;
    var chart = svg("svg", {width: left + width + 70, height: top + shown.length * row + 40, role: "img",
      "aria-label": "next-token probabilities"});
    text("Next token after \u201c" + prompt.text + "\u201d", {x: 8, y: 18, "font-weight": "bold",
      fill: "currentColor"}, chart);
    shown.forEach(function (i, j) {
      var y = top + j * row;
      text(visible(prompt.tokens[i]), {x: left - 8, y: y + row * 0.7, "text-anchor": "end", "font-size": 13,
        fill: "currentColor"}, chart);
      svg("rect", {x: left, y: y + 3, width: Math.max(1, probs[i] * width), height: row - 6, fill: viridis(0.35),
        "data-probability": probs[i].toFixed(4)}, chart);
      text(probs[i].toFixed(3), {x: left + probs[i] * width + 6, y: y + row * 0.7, "font-size": 12,
        fill: "currentColor"}, chart);
    });
    text("probability", {x: left + width / 2, y: top + shown.length * row + 28, "text-anchor": "middle",
      "font-size": 12, fill: "currentColor"}, chart);
    var summary = document.createElement("p");
    summary.className = "minigpt-summary";
    summary.textContent = kept + " of the " + prompt.logits.length + " most likely tokens can be drawn; the top one, " +
      "\u201c" + visible(prompt.tokens[shown[0]]) + "\u201d, has probability " + probs[shown[0]].toFixed(3) +
      ". (At temperature 1 the tokens beyond these " + prompt.logits.length + " hold " +
      (100 * prompt.left_out).toFixed(2) + "% of the probability.)";
    figure.replaceChildren(summary, chart);
  }

  var DRAW = {attention: drawAttention, sampling: drawSampling};

  function render(id) {
    var root = document.getElementById(id);
    if (!root || root.dataset.ready) { return; }  // missing, or drawn already by an earlier copy of the output
    root.dataset.ready = "1";
    var data = JSON.parse(root.querySelector("script.minigpt-data").textContent);
    var figure = root.querySelector(".minigpt-figure");
    var kind = id.split("-")[1];
    var redraw = function () {
      root.querySelectorAll("input[type=range]").forEach(function (input) {
        root.querySelector('output[name="' + input.name + '-value"]').textContent = input.value;
      });
      DRAW[kind](root, data, figure);
    };
    root.querySelectorAll("select, input").forEach(function (control) {
      control.addEventListener("input", redraw);
      control.addEventListener("change", redraw);
    });
    redraw();
  }

  return {render: render, probabilities: probabilities};
})();
