/** A deliberately incompatible change of workflows.ts: `order` ships before it charges. */
import { proxyActivities } from 'longhaul/workflow';
import type * as activities from './activities.js';

const { charge, ship } = proxyActivities<typeof activities>({ startToCloseTimeout: '10s' });

export async function order(orderId: string): Promise<string> {
  const label = await ship(orderId);
  return `${label}|${await charge(orderId)}`;
}

export async function cancellable(): Promise<string> {
  return 'changed';
}
