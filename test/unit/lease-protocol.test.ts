import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

/*
 * The lease protocol between writers and the GC (src/gc/lease.ts, DESIGN.md section 5), model-checked: every
 * interleaving of two writers and one GC over a small bucket, each step one bucket operation in the order the
 * code performs them, explored exhaustively (depth first, each state once). Asserted in every state: once a
 * writer has reported its closure done, every path of it has its narinfo and NAR in the bucket, and so has
 * every reference. Grace is 0 and nothing is recent or pinned, so the GC deletes whatever no lease protects.
 *
 * Writer (LeaseWriter.hold, then pushClosures in src/upload/push.ts):
 *   lease      put its lease, naming the closure's paths and NAR hashes
 *   sweeping   list cachectl/gc/sweeping/: a GC's announcement means it may still delete what it allowed
 *              before the lease was in the bucket
 *   wait       only after a sweep was seen: waitOutSweeps, SWEEP_WINDOW_MS after the lease was in the bucket,
 *              by when every such delete has taken effect (modelled: the GC's batch whose lease read came
 *              before the lease is finished)
 *   present    list the narinfos of the closure (findPresent)
 *   publish    put each missing NAR, and each narinfo after its NAR and its references' narinfos, in any order
 *              the dependencies allow (NARs go in parallel)
 *   done       report the closure done
 *
 * GC (collectGarbage in src/gc/gc.ts, Sweeper in src/gc/sweep.ts):
 *   list       list the narinfos (their references are read with them), then, a step later, the NARs
 *   plan       read the leases; what their paths do not reach is deletable (grace 0)
 *   announce   put its mark under cachectl/gc/sweeping/, before its first lease read of the sweep
 *   batches    for each layer of narinfos (referrers first), then the NARs: read the leases again, then
 *              delete each key of the batch not protected now, one key at a time (a DeleteObjects request is
 *              not atomic)
 *   end        delete its mark
 */

type Path = string;

interface Scenario {
  /** the references of every path (itself not included) */
  graph: Record<Path, Path[]>;
  writers: Path[][];
  /** narinfos and NARs in the bucket at the start */
  narinfos: Path[];
  nars: Path[];
}

/** How a writer or the GC departs from the protocol: the mutants the checker must catch. */
type Mutant =
  | 'none'
  | 'the writer skips the wait'
  | 'the lease is written after the existence check'
  | 'the GC skips its re-check of the leases before each batch'
  | 'the writer publishes first and re-checks after the window';

interface WriterState {
  /** its next step, an index into its WRITER_STEPS */
  pc: number;
  sweeping: boolean;
  /** the GC batch whose lease read came before this lease (the wait is for it), or -1 */
  blockingBatch: number;
  /** narinfos and NARs still to put in the current publishing step */
  toPut: { narinfo: Path[]; nar: Path[] };
  /** the NARs it put: the re-check HEADs these (publishPaths returns their keys) */
  putNars: Path[];
  done: boolean;
}

interface GcState {
  pc: number;
  listedNarinfos: Path[] | undefined;
  listedNars: Path[] | undefined;
  /** paths the leases protect, as last read */
  protectedPaths: Path[];
  /** what the first read left deletable, in batches: narinfo layers then NARs */
  batches: { kind: 'narinfo' | 'nar'; keys: Path[] }[];
  batch: number;
  /** the id of the batch whose lease read is the last one, and the keys of it not yet deleted */
  batchId: number;
  pending: Path[];
  deletedNarinfos: Path[];
}

interface State {
  narinfos: Set<Path>;
  nars: Set<Path>;
  leases: Map<number, Path[]>;
  mark: boolean;
  writers: WriterState[];
  gc: GcState;
}

/** The writer's steps in order, by mutant. */
const WRITER_STEPS: Record<Mutant, readonly WriterStep[]> = {
  none: ['lease', 'sweeping', 'wait', 'present', 'publish', 'done'],
  'the writer skips the wait': ['lease', 'sweeping', 'present', 'publish', 'done'],
  'the lease is written after the existence check': ['present', 'lease', 'sweeping', 'wait', 'publish', 'done'],
  'the GC skips its re-check of the leases before each batch': [
    'lease',
    'sweeping',
    'wait',
    'present',
    'publish',
    'done',
  ],
  // cachectl until this model found a writer done over a NAR deleted under another writer's fresh narinfo
  'the writer publishes first and re-checks after the window': [
    'lease',
    'sweeping',
    'present',
    'publish',
    'wait',
    'recheck',
    'publish',
    'done',
  ],
};
type WriterStep = 'lease' | 'sweeping' | 'wait' | 'present' | 'publish' | 'recheck' | 'done';
const GC_STEPS = ['listNarinfos', 'listNars', 'plan', 'announce', 'batches', 'end', 'finished'] as const;

function closureOf(graph: Record<Path, Path[]>, roots: Iterable<Path>, within?: ReadonlySet<Path>): Set<Path> {
  const reached = new Set<Path>();
  const todo = [...roots];
  for (let path = todo.pop(); path !== undefined; path = todo.pop()) {
    if (reached.has(path)) continue;
    reached.add(path);
    // The GC knows the references of the narinfos it listed only.
    if (within === undefined || within.has(path)) todo.push(...(graph[path] ?? []));
  }
  return reached;
}

function key(state: State): string {
  return JSON.stringify([
    [...state.narinfos].sort(),
    [...state.nars].sort(),
    [...state.leases].sort(),
    state.mark,
    state.writers,
    state.gc,
  ]);
}

function clone(state: State): State {
  return {
    narinfos: new Set(state.narinfos),
    nars: new Set(state.nars),
    leases: new Map(state.leases),
    mark: state.mark,
    writers: state.writers.map((w) => ({
      ...w,
      toPut: { narinfo: [...w.toPut.narinfo], nar: [...w.toPut.nar] },
      putNars: [...w.putNars],
    })),
    gc: structuredClone(state.gc),
  };
}

/** Every state one step of one actor leads to, with a label for traces. */
function successors(state: State, scenario: Scenario, mutant: Mutant): [string, State][] {
  const next: [string, State][] = [];
  const { graph } = scenario;
  scenario.writers.forEach((roots, w) => {
    const closure = [...closureOf(graph, roots)];
    const writer = state.writers[w] as WriterState;
    const step = WRITER_STEPS[mutant][writer.pc];
    const advance = (label: string, change: (s: State, me: WriterState) => void) => {
      const s = clone(state);
      const me = s.writers[w] as WriterState;
      change(s, me);
      next.push([`W${w + 1} ${label}`, s]);
    };
    const publishing = (me: WriterState, missing: Path[]) => {
      me.toPut = { narinfo: [...missing], nar: [...missing] };
    };
    switch (step) {
      case 'lease':
        advance('puts its lease', (s, me) => {
          s.leases.set(w, closure);
          me.blockingBatch = s.gc.pending.length > 0 ? s.gc.batchId : -1;
          me.pc += 1;
        });
        break;
      case 'sweeping':
        advance(`lists sweeps (${state.mark ? 'one' : 'none'})`, (s, me) => {
          me.sweeping = s.mark;
          me.pc += 1;
        });
        break;
      case 'present':
        advance('lists present narinfos', (s, me) => {
          publishing(
            me,
            closure.filter((path) => !s.narinfos.has(path)),
          );
          me.pc += 1;
        });
        break;
      case 'publish': {
        const { narinfo, nar } = writer.toPut;
        if (narinfo.length === 0) {
          advance('has published', (_s, me) => {
            me.pc += 1;
          });
          break;
        }
        for (const path of nar) {
          advance(`puts NAR ${path}`, (s, me) => {
            s.nars.add(path);
            me.toPut.nar = me.toPut.nar.filter((p) => p !== path);
            if (!me.putNars.includes(path)) me.putNars = [...me.putNars, path].sort();
          });
        }
        for (const path of narinfo) {
          // A narinfo goes up after its NAR and after the narinfos of its references that it is putting too.
          const ready = !nar.includes(path) && !(graph[path] ?? []).some((ref) => narinfo.includes(ref));
          if (!ready) continue;
          advance(`puts narinfo ${path}`, (s, me) => {
            s.narinfos.add(path);
            me.toPut.narinfo = me.toPut.narinfo.filter((p) => p !== path);
          });
        }
        break;
      }
      case 'wait': {
        // Without a sweep seen, there is nothing to wait for.
        const blocked = writer.sweeping && state.gc.pending.length > 0 && state.gc.batchId === writer.blockingBatch;
        if (!blocked) {
          advance(writer.sweeping ? 'has waited out the sweep window' : 'need not wait', (_s, me) => {
            me.pc += 1;
          });
        }
        break;
      }
      case 'recheck':
        advance('re-checks narinfos and NARs', (s, me) => {
          // Only after a sweep was seen; the NARs it put are HEADed, the rest are known by their narinfos.
          const gone = closure.filter(
            (path) => !s.narinfos.has(path) || (me.putNars.includes(path) && !s.nars.has(path)),
          );
          publishing(me, me.sweeping ? gone : []);
          me.pc += 1;
        });
        break;
      case 'done':
        advance('reports done', (_s, me) => {
          me.done = true;
          me.pc += 1;
        });
        break;
      case undefined:
        break;
    }
  });

  const gc = state.gc;
  const gcAdvance = (label: string, change: (s: State, g: GcState) => void) => {
    const s = clone(state);
    change(s, s.gc);
    next.push([`GC ${label}`, s]);
  };
  const readLeases = (s: State): Path[] => {
    const listed = new Set(s.gc.listedNarinfos);
    return [...closureOf(graph, [...s.leases.values()].flat(), listed)].sort();
  };
  switch (GC_STEPS[gc.pc]) {
    case 'listNarinfos':
      gcAdvance('lists narinfos', (s, g) => {
        g.listedNarinfos = [...s.narinfos].sort();
        g.pc += 1;
      });
      break;
    case 'listNars':
      gcAdvance('lists NARs', (s, g) => {
        g.listedNars = [...s.nars].sort();
        g.pc += 1;
      });
      break;
    case 'plan':
      gcAdvance('reads leases, plans', (s, g) => {
        g.protectedPaths = readLeases(s);
        const reachable = new Set(g.protectedPaths);
        const listed = g.listedNarinfos ?? [];
        const deletable = listed.filter((path) => !reachable.has(path));
        // referrersFirst: layers such that nothing in a layer is referred to by a later one
        let left = [...deletable];
        while (left.length > 0) {
          const layer = left.filter((path) => !left.some((other) => (graph[other] ?? []).includes(path)));
          g.batches.push({ kind: 'narinfo', keys: layer });
          left = left.filter((path) => !layer.includes(path));
        }
        const liveNars = new Set(listed.filter((path) => reachable.has(path)));
        const leasedNars = new Set([...s.leases.values()].flat());
        const nars = (g.listedNars ?? []).filter((path) => !liveNars.has(path) && !leasedNars.has(path));
        if (nars.length > 0) g.batches.push({ kind: 'nar', keys: nars });
        // Nothing to delete: no sweep, no announcement.
        g.pc += g.batches.length === 0 ? 4 : 1;
      });
      break;
    case 'announce':
      gcAdvance('announces its sweep', (s, g) => {
        s.mark = true;
        g.pc += 1;
      });
      break;
    case 'batches': {
      if (gc.pending.length > 0) {
        for (const path of gc.pending) {
          const batch = gc.batches[gc.batch - 1];
          gcAdvance(`deletes ${batch?.kind} ${path}`, (s, g) => {
            if (batch?.kind === 'narinfo') {
              s.narinfos.delete(path);
              g.deletedNarinfos.push(path);
            } else s.nars.delete(path);
            g.pending = g.pending.filter((p) => p !== path);
          });
        }
        break;
      }
      const batch = gc.batches[gc.batch];
      if (batch === undefined) {
        gcAdvance('has swept', (_s, g) => {
          g.pc += 1;
        });
        break;
      }
      gcAdvance(`reads leases for batch ${gc.batch + 1}`, (s, g) => {
        if (mutant !== 'the GC skips its re-check of the leases before each batch') g.protectedPaths = readLeases(s);
        const now = new Set(g.protectedPaths);
        const leasedNars = new Set(
          mutant === 'the GC skips its re-check of the leases before each batch'
            ? g.protectedPaths
            : [...s.leases.values()].flat(),
        );
        // A NAR stays while a listed narinfo not deleted needs it (stillNeeded), or a lease names it.
        const neededNars = new Set((g.listedNarinfos ?? []).filter((path) => !g.deletedNarinfos.includes(path)));
        g.pending = batch.keys.filter((path) =>
          batch.kind === 'narinfo' ? !now.has(path) : !neededNars.has(path) && !leasedNars.has(path),
        );
        g.batchId += 1;
        g.batch += 1;
      });
      break;
    }
    case 'end':
      gcAdvance('ends its sweep', (s, g) => {
        s.mark = false;
        g.pc += 1;
      });
      break;
    default:
      break;
  }
  return next;
}

/** What is wrong in `state`: a writer reports done while its closure is not whole in the bucket. */
function violation(state: State, scenario: Scenario): string | undefined {
  for (const [w, writer] of state.writers.entries()) {
    if (!writer.done) continue;
    for (const path of closureOf(scenario.graph, scenario.writers[w] ?? [])) {
      if (!state.narinfos.has(path)) return `W${w + 1} is done but narinfo ${path} is missing`;
      if (!state.nars.has(path)) return `W${w + 1} is done but the NAR of ${path} is missing`;
    }
  }
  return undefined;
}

function initialState(scenario: Scenario): State {
  return {
    narinfos: new Set(scenario.narinfos),
    nars: new Set(scenario.nars),
    leases: new Map(),
    mark: false,
    writers: scenario.writers.map(() => ({
      pc: 0,
      sweeping: false,
      blockingBatch: -1,
      toPut: { narinfo: [], nar: [] },
      putNars: [],
      done: false,
    })),
    gc: {
      pc: 0,
      listedNarinfos: undefined,
      listedNars: undefined,
      protectedPaths: [],
      batches: [],
      batch: 0,
      batchId: 0,
      pending: [],
      deletedNarinfos: [],
    },
  };
}

/** Explores every interleaving; returns the number of distinct states and the first counterexample, if any. */
function explore(scenario: Scenario, mutant: Mutant): { states: number; ends: number; counterexample?: string[] } {
  const seen = new Set<string>();
  let ends = 0;
  // Depth first, with the trace of labels that led to each state (for a counterexample).
  const stack: { state: State; trace: string[] }[] = [{ state: initialState(scenario), trace: [] }];
  while (stack.length > 0) {
    const { state, trace } = stack.pop() as { state: State; trace: string[] };
    const id = key(state);
    if (seen.has(id)) continue;
    seen.add(id);
    const problem = violation(state, scenario);
    if (problem !== undefined) return { states: seen.size, ends, counterexample: [...trace, `=> ${problem}`] };
    const next = successors(state, scenario, mutant);
    if (next.length === 0) {
      ends += 1;
      // Every actor ran to its end: nothing can be stuck.
      assert.ok(
        state.writers.every((w) => w.done) && GC_STEPS[state.gc.pc] === 'finished',
        `stuck: ${trace.join(' · ')}`,
      );
    }
    for (const [label, after] of next) stack.push({ state: after, trace: [...trace, label] });
  }
  return { states: seen.size, ends };
}

// Four paths with shared references: W1 pushes a (→ b, c), W2 pushes d (→ b, c); b → c.
const GRAPH: Record<Path, Path[]> = { a: ['b', 'c'], b: ['c'], c: [], d: ['b', 'c'] };
const WRITERS = [['a'], ['d']];
/** Buckets to start from: every closed set of narinfos, with their NARs, and NARs left by cut-off uploads. */
const STARTS: { narinfos: Path[]; nars: Path[] }[] = [
  { narinfos: [], nars: [] },
  { narinfos: ['c'], nars: ['c'] },
  { narinfos: ['b', 'c'], nars: ['b', 'c'] },
  { narinfos: ['a', 'b', 'c'], nars: ['a', 'b', 'c'] },
  { narinfos: ['b', 'c', 'd'], nars: ['b', 'c', 'd'] },
  { narinfos: ['a', 'b', 'c', 'd'], nars: ['a', 'b', 'c', 'd'] },
  { narinfos: ['c'], nars: ['a', 'b', 'c'] },
];
const scenarios: Scenario[] = STARTS.map((start) => ({ graph: GRAPH, writers: WRITERS, ...start }));

describe('the lease protocol, model-checked', () => {
  it('keeps every closure a writer reports done whole, in every interleaving of two writers and a GC', () => {
    let states = 0;
    let ends = 0;
    for (const scenario of scenarios) {
      const result = explore(scenario, 'none');
      assert.equal(result.counterexample, undefined, result.counterexample?.join('\n'));
      states += result.states;
      ends += result.ends;
    }
    // The size of the exploration, for the record (and so that a change that shrinks it to nothing shows).
    process.stdout.write(`# lease protocol: ${states} states, ${ends} complete runs, ${scenarios.length} buckets\n`);
    assert.ok(states > 100_000, `${states} states`);
  });

  for (const mutant of [
    'the writer skips the wait',
    'the lease is written after the existence check',
    'the GC skips its re-check of the leases before each batch',
    'the writer publishes first and re-checks after the window',
  ] as const) {
    it(`finds a counterexample when ${mutant}`, () => {
      const found = scenarios.map((scenario) => explore(scenario, mutant)).find((r) => r.counterexample !== undefined);
      assert.ok(found?.counterexample !== undefined, `${mutant}: no counterexample`);
      process.stdout.write(`# ${mutant}: ${found.counterexample.join(' · ')}\n`);
    });
  }
});
