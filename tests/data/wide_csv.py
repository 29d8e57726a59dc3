"""A wide CSV of loans as a user would bring one: 56 columns of mixed types, identifiers, a
date to split by and a second one known only afterwards, numbers written with units, free
text, a constant, a mostly empty column, and a two-label outcome to predict."""

from __future__ import annotations

import numpy as np
import pandas as pd

GRADES = list("ABCDEFG")
PURPOSES = [
    "debt_consolidation",
    "credit_card",
    "home_improvement",
    "other",
    "major_purchase",
    "small_business",
    "car",
    "medical",
    "moving",
    "vacation",
    "house",
    "wedding",
    "renewable_energy",
    "educational",
]
STATES = ["CA", "NY", "TX", "FL", "IL", "NJ", "PA", "OH", "GA", "VA", "NC", "MI", "MD", "MA", "AZ", "WA"]
EXTRA_NUMBERS = 20  # bureau_01 ... bureau_20: anonymised credit-bureau scores


def loans(rows: int = 12_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    issued = pd.Timestamp("2016-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 3 * 365, rows)), unit="D")
    grade = rng.choice(GRADES, rows, p=[0.18, 0.28, 0.25, 0.15, 0.08, 0.04, 0.02])
    grade_index = pd.Series(grade).map({g: i for i, g in enumerate(GRADES)}).to_numpy()
    rate = np.round(6 + 3.2 * grade_index + rng.normal(0, 0.9, rows), 2)
    amount = rng.integers(10, 400, rows) * 100
    term = rng.choice([36, 60], rows, p=[0.75, 0.25])
    income = np.round(rng.lognormal(11, 0.5, rows), -2)
    dti = np.round(rng.gamma(4, 4.5, rows), 2)
    revol_util = np.round(rng.uniform(0, 110, rows), 1)
    revol_util[rng.random(rows) < 0.02] = np.nan
    since_delinq = rng.integers(0, 120, rows).astype(float)
    since_delinq[rng.random(rows) < 0.7] = np.nan
    logit = -3.2 + 0.45 * grade_index + 0.03 * (dti - 18) + 0.4 * (term == 60) - 0.3 * np.log(income / 60000)
    charged_off = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "loan_id": [f"LN{index:07d}" for index in rng.permutation(rows)],
            "member_id": np.arange(1_000_000, 1_000_000 + rows),
            "issue_d": issued.strftime("%Y-%m-%d"),
            "loan_amnt": amount,
            "funded_amnt": amount - rng.integers(0, 3, rows) * 25,
            "term": [f" {months} months" for months in term],
            "int_rate": [f"{value:.2f}%" for value in rate],
            "installment": np.round(amount * (rate / 1200) / (1 - (1 + rate / 1200) ** -term), 2),
            "grade": grade,
            "sub_grade": [f"{g}{n}" for g, n in zip(grade, rng.integers(1, 6, rows))],
            "emp_title": [f"employee title {n}" for n in rng.integers(0, 5000, rows)],
            "emp_length": rng.choice(["< 1 year", "1 year", "2 years", "5 years", "10+ years", None], rows),
            "home_ownership": rng.choice(["RENT", "MORTGAGE", "OWN"], rows, p=[0.4, 0.5, 0.1]),
            "annual_inc": income,
            "verification_status": rng.choice(["Verified", "Source Verified", "Not Verified"], rows),
            "loan_status": np.where(charged_off, "Charged Off", "Fully Paid"),
            "purpose": rng.choice(PURPOSES, rows),
            "title": rng.choice(["Debt consolidation", "Credit card refinancing", "Home improvement", None], rows),
            "zip_code": [f"{n:03d}xx" for n in rng.integers(0, 999, rows)],
            "addr_state": rng.choice(STATES, rows),
            "dti": dti,
            "delinq_2yrs": rng.poisson(0.3, rows),
            "fico_range_low": rng.integers(132, 170, rows) * 5,
            "inq_last_6mths": rng.poisson(0.7, rows),
            "mths_since_last_delinq": since_delinq,
            "open_acc": rng.poisson(11, rows),
            "pub_rec": rng.poisson(0.2, rows),
            "revol_bal": rng.integers(0, 60000, rows),
            "revol_util": revol_util,
            "total_acc": rng.poisson(25, rows),
            "initial_list_status": rng.choice(["w", "f"], rows),
            "last_pymnt_d": (issued + pd.to_timedelta(rng.integers(30, 1500, rows), unit="D")).strftime("%Y-%m-%d"),
            "policy_code": 1,
            "application_type": rng.choice(["Individual", "Joint App"], rows, p=[0.95, 0.05]),
            "desc": [
                f"Borrower added on {day}: I need this loan for case {n}"
                for day, n in zip(issued.strftime("%m/%d/%y"), rng.permutation(rows))
            ],
            "hardship_flag": rng.choice(["N", "Y"], rows, p=[0.99, 0.01]),
        }
    )
    for index in range(1, EXTRA_NUMBERS + 1):
        frame[f"bureau_{index:02d}"] = np.round(rng.normal(500, 80, rows), 1)
    return frame
