// emg_streamer: reference firmware for the emotion-edge EMG board.
//
// Samples three facial EMG channels at a fixed 1000 Hz and streams them over USB serial, one line per
// sample:
//
//     n,v1,v2,v3\n
//
//   n   sample counter, uint32 decimal, +1 per sampling tick, wraps 4294967295 -> 0. A tick that could not
//       be sent still consumes its number, so the daemon sees a gap in n and knows samples were dropped
//       (instead of silently stretching time).
//   v1  corrugator supercilii (frown)       A0
//   v2  zygomaticus major (smile)           A1
//   v3  depressor anguli oris (mouth down)  A2
//       raw ADC counts: 0..1023 on AVR boards (10-bit), 0..4095 on ESP32 (12-bit). Set the daemon's
//       emg.serial.value_max to match (1023 or 4095).
//
// Lines end in '\n' only (no '\r'); nothing else is ever printed, so every line parses as data.
//
// Link budget: a typical line is ~20 bytes ("1234567,512,498,530\n"), so 1 kHz needs ~20 kB/s. On a UART
// at 8N1 each byte costs 10 bits: 115200 baud moves only 11.5 kB/s (too slow), 230400 moves 23 kB/s.
// 230400 is therefore the default; the daemon's emg.serial.baudrate MUST be set to the same value.
// Longest line is 26 bytes (10-digit counter, four-digit values), which 230400 cannot carry at 1 kHz:
// with 12-bit values (ESP32) that happens once the counter has 8+ digits (after ~2.8 h), so prefer
// 460800 there (USB bridges on ESP32 boards handle it). Native-USB boards (Uno R4, Nano 33 BLE/IoT,
// ESP32-S2/S3 on their USB port) ignore the baud rate and are not limited by it.
// A 16 MHz AVR really runs 230400 as 222222 baud (-3.5%); the Uno's 16U2 bridge has the same error and
// matches, CH340 clones usually cope. If lines arrive garbled, use 250000 (exact on AVR) on both sides.
//
// Boards: Arduino Uno/Nano (AVR), Nano 33 BLE/IoT, ESP32. analogRead() takes ~112 us on a 16 MHz AVR, so
// three channels use about a third of each 1 ms tick there.

#include <Arduino.h>

#ifndef SERIAL_BAUD
#define SERIAL_BAUD 230400UL
#endif

static const uint32_t SAMPLE_RATE_HZ = 1000;  // must match the daemon's emg.sample_rate_hz
static const uint32_t PERIOD_US = 1000000UL / SAMPLE_RATE_HZ;

#if defined(ARDUINO_ARCH_ESP32)
// Classic ESP32 dev kits do not define A1/A2. ADC1 pins keep working while Wi-Fi is on (ADC2 does not):
// GPIO36 (VP), GPIO39 (VN), GPIO34. Adjust for ESP32-S2/S3/C3 boards.
static const uint8_t PIN_CORRUGATOR = 36;
static const uint8_t PIN_ZYGOMATICUS = 39;
static const uint8_t PIN_DEPRESSOR = 34;
#else
static const uint8_t PIN_CORRUGATOR = A0;
static const uint8_t PIN_ZYGOMATICUS = A1;
static const uint8_t PIN_DEPRESSOR = A2;
#endif

static uint32_t next_tick_us;
static uint32_t sample_counter = 0;

void setup() {
  Serial.begin(SERIAL_BAUD);
#if defined(ARDUINO_ARCH_ESP32)
  analogReadResolution(12);  // 0..4095 (the core's default attenuation, 11 dB, spans ~0..3.1 V)
#endif
  next_tick_us = micros();
}

void loop() {
  // Unsigned subtraction keeps this correct across the micros() wrap (every ~71.6 minutes).
  uint32_t late_us = micros() - next_tick_us;
  if ((int32_t)late_us < 0) {
    return;  // not yet time for the next tick
  }
  // More than a whole period late (serial blocked, interrupts): skip the missed ticks but count them, so
  // the daemon sees the gap. Advancing the deadline by whole periods (never "now + period") keeps the
  // long-run rate exactly SAMPLE_RATE_HZ without drift.
  uint32_t missed = late_us / PERIOD_US;
  sample_counter += missed;
  next_tick_us += missed * PERIOD_US;

  int v1 = analogRead(PIN_CORRUGATOR);
  int v2 = analogRead(PIN_ZYGOMATICUS);
  int v3 = analogRead(PIN_DEPRESSOR);

  // One buffer and one write per sample: fewer calls into the serial driver than printing four fields.
  char line[32];
  int len = snprintf(line, sizeof line, "%lu,%d,%d,%d\n", (unsigned long)sample_counter, v1, v2, v3);
  Serial.write((const uint8_t *)line, (size_t)len);

  sample_counter++;  // wraps from 4294967295 to 0, which the daemon expects
  next_tick_us += PERIOD_US;
}
