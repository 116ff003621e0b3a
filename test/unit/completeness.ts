import type { AnyStateMachine, AnyStateNode } from 'xstate';

/** The leaf states of a machine. */
export function atomicStates(node: AnyStateNode): AnyStateNode[] {
  const children = Object.values(node.states);
  if (children.length === 0) return [node];
  return children.flatMap(atomicStates);
}

/** Whether `node` or an ancestor has a transition for `type`. */
export function handles(node: AnyStateNode, type: string): boolean {
  for (let n: AnyStateNode | undefined = node; n; n = n.parent) {
    if (n.transitions.has(type)) return true;
  }
  return false;
}

/**
 * The design card's rule, checked: every event type has an explicit transition (in the state or
 * an ancestor) in every state that can receive events. Returns `state: event` for each gap, minus
 * the documented exclusions (`unreachable[stateId][event]` = the reason).
 */
export function missingTransitions(
  machine: AnyStateMachine,
  eventTypes: readonly string[],
  unreachable: Record<string, Record<string, string>> = {},
): string[] {
  const missing: string[] = [];
  for (const state of atomicStates(machine.root)) {
    if (state.type === 'final') continue;
    // Transient states are left by an unguarded `always` in the same macrostep: no event can
    // reach them. (A guarded `always`, like the supervisor's `closing`, does not make one.)
    if (state.always?.some((t) => !t.guard)) continue;
    for (const type of eventTypes) {
      if (unreachable[state.id]?.[type]) continue;
      if (!handles(state, type)) missing.push(`${state.id}: ${type}`);
    }
  }
  return missing;
}
