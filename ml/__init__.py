"""Machine learning signals (CatBoost volatility and direction models). Built under issue 5."""
