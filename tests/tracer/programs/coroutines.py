import asyncio


async def double(x):
    await asyncio.sleep(0)
    return x * 2


async def gather_all(n):
    values = []
    for i in range(n):
        values.append(await double(i))
    return values


def main(n):
    return asyncio.run(gather_all(n))
