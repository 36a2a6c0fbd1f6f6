import { activityInfo, sleep } from 'longhaul/activity';

export async function charge(orderId: string): Promise<string> {
  if (orderId === 'never') await sleep(3_600_000);
  return `charged-${orderId}`;
}

export async function ship(what: string): Promise<string> {
  return `shipped-${what}`;
}

export async function flaky(failures: number): Promise<number> {
  const { attempt } = activityInfo();
  if (attempt <= failures) throw new Error(`attempt ${attempt} fails on purpose`);
  return attempt;
}
