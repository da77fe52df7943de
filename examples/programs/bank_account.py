"""A small account ledger: deposits, withdrawals and one refused overdraft."""


class InsufficientFunds(Exception):
    pass


class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount):
        self.balance += amount
        self.history.append(("deposit", amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise InsufficientFunds(f"{self.owner} has {self.balance}, needs {amount}")
        self.balance -= amount
        self.history.append(("withdraw", amount))


account = Account("ada", 10)
account.deposit(25)
account.withdraw(12)
try:
    account.withdraw(100)
except InsufficientFunds as exc:
    print("refused:", exc)
print(account.owner, account.balance, account.history)
