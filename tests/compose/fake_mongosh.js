// Runs a mongosh script under node with a scripted fake of the shell globals it uses, so its
// logic can be tested without a MongoDB server (none is obtainable on the build machines).
//
//   node fake_mongosh.js SCRIPT SCENARIO_JSON
//
// SCENARIO_JSON: {"env": {...}, "replies": {"<command name>": [reply, ...]}}
// Replies of one command are used in order and the last one repeats. A reply {"throw": {"code",
// "message"}} is thrown as mongosh throws a MongoServerError. `sleep` advances a fake clock
// that `Date.now()` reads, so wait loops run instantly. `require` is node's (the script reads its
// secrets with `fs`).
//
// Prints one JSON line: {"exitCode", "error", "commands", "printed", "clockMs"}.

"use strict";

const fs = require("node:fs");
const vm = require("node:vm");

class Quit extends Error {
  constructor(code) {
    super(`quit(${code})`);
    this.exitCode = code;
  }
}

function main() {
  const [scriptPath, scenarioJson] = process.argv.slice(2);
  const scenario = JSON.parse(scenarioJson);
  const replies = scenario.replies || {};
  const commands = [];
  const printed = [];
  let clockMs = 0;

  function nextReply(name) {
    const queue = replies[name];
    if (!queue || queue.length === 0) {
      throw new Error(`unexpected command ${name}`);
    }
    const reply = queue.length > 1 ? queue.shift() : queue[0];
    if (reply.throw) {
      const error = new Error(reply.throw.message || name);
      error.code = reply.throw.code;
      throw error;
    }
    return reply;
  }

  const sandbox = {
    db: {
      adminCommand(command) {
        commands.push(command);
        return nextReply(Object.keys(command)[0]);
      },
      // mongosh's db.getSiblingDB(name).auth(user, pwd), recorded as {auth: user, db: name}; it
      // succeeds unless the scenario scripts "auth" replies.
      getSiblingDB(name) {
        return {
          auth(user, pwd) {
            commands.push({ auth: user, db: name, pwdLength: String(pwd).length });
            return replies.auth ? nextReply("auth") : { ok: 1 };
          },
        };
      },
    },
    require,
    print: (...parts) => printed.push(parts.join(" ")),
    quit: (code = 0) => {
      throw new Quit(code);
    },
    sleep: (ms) => {
      clockMs += ms;
    },
    process: { env: { ...(scenario.env || {}) } },
    Date: { now: () => clockMs },
  };

  let exitCode = 0;
  let error = null;
  try {
    vm.runInNewContext(fs.readFileSync(scriptPath, "utf8"), sandbox, { filename: scriptPath });
  } catch (caught) {
    if (caught instanceof Quit) {
      exitCode = caught.exitCode;
    } else {
      // mongosh exits non-zero on an uncaught error.
      exitCode = 1;
      error = String(caught && caught.message);
    }
  }
  process.stdout.write(`${JSON.stringify({ exitCode, error, commands, printed, clockMs })}\n`);
}

main();
