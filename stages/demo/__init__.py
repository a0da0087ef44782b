"""The synthetic demo dataset in the BirdCLEF 2021 layout: species call designs and the generator."""
